"""The attention math in pure NumPy: no Qt, no files, no globals."""

from .attention import AttentionResult, attention_mask, multi_head_attention, softmax
from .cancel import CancelToken
from .circuits import Spectrum, composition_scores, ov_circuit, qk_circuit, spectrum
from .errors import (
    Cancelled,
    CheckpointError,
    FigureError,
    MatrixFileError,
    NonFiniteError,
    PresetError,
    QkvError,
    ReadOnlyFileError,
    SessionError,
    SessionFileError,
    ShapeError,
    UsageError,
)
from .learn import (
    TARGET_PRESETS,
    Floor,
    PatternFitter,
    fit_pattern,
    loss_floor,
    normalize_target,
    pattern_loss,
    qk_singular_values,
    target_preset,
)

__all__ = [
    "TARGET_PRESETS",
    "AttentionResult",
    "CancelToken",
    "Cancelled",
    "CheckpointError",
    "FigureError",
    "Floor",
    "MatrixFileError",
    "NonFiniteError",
    "PatternFitter",
    "PresetError",
    "QkvError",
    "ReadOnlyFileError",
    "SessionError",
    "SessionFileError",
    "ShapeError",
    "Spectrum",
    "UsageError",
    "attention_mask",
    "composition_scores",
    "fit_pattern",
    "loss_floor",
    "multi_head_attention",
    "normalize_target",
    "ov_circuit",
    "pattern_loss",
    "qk_circuit",
    "qk_singular_values",
    "softmax",
    "spectrum",
    "target_preset",
]
