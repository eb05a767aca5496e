"""The attention math in pure NumPy: no Qt, no files, no globals."""

from .attention import AttentionResult, attention_mask, multi_head_attention, softmax
from .circuits import Spectrum, composition_scores, ov_circuit, qk_circuit, spectrum
from .errors import NonFiniteError, QkvError, ShapeError
from .learn import (
    TARGET_PRESETS,
    Floor,
    PatternFitter,
    fit_pattern,
    loss_floor,
    normalize_target,
    pattern_loss,
    target_preset,
)

__all__ = [
    "TARGET_PRESETS",
    "AttentionResult",
    "Floor",
    "PatternFitter",
    "fit_pattern",
    "loss_floor",
    "normalize_target",
    "pattern_loss",
    "target_preset",
    "NonFiniteError",
    "QkvError",
    "ShapeError",
    "Spectrum",
    "attention_mask",
    "composition_scores",
    "multi_head_attention",
    "ov_circuit",
    "qk_circuit",
    "softmax",
    "spectrum",
]
