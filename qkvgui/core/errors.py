"""The errors a learner can meet in the core, each with a message that says what is wrong and what to do."""


class QkvError(ValueError):
    """Base class of every error qkvgui raises on purpose; its message is written for the user."""


class ShapeError(QkvError):
    """Two matrices do not fit together (names both sides and the dimension they disagree on)."""


class NonFiniteError(QkvError):
    """A matrix holds NaN or an infinity where only finite numbers make sense."""
