"""Kept for imports written before the family modules: see ``qkvgui.io.checkpoints``."""

from qkvgui.io.checkpoints import CheckpointError, checkpoint_info, read_checkpoint

__all__ = ["CheckpointError", "checkpoint_info", "read_checkpoint"]
