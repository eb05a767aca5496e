"""Controls of the LLaMA family's two attention settings: rotary positions (on/off and the base θ) and how many
key/value heads the query heads share. Every change goes through ``change`` (one undo step)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QLabel, QWidget

from qkvgui.session import Session


class RotaryControls(QWidget):
    """RoPE on/off, θ, and the number of key/value heads (n_heads: ordinary multi-head; 1: multi-query)."""

    def __init__(self, session: Session, change: Callable[..., bool], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self._change = session, change
        self._updating = False
        # two short rows, so the control column can narrow to ~300 px while a view is focused
        row = QGridLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.rotary_box = QCheckBox("RoPE, θ =")
        self.rotary_box.setObjectName("control.rotary")
        self.rotary_box.setToolTip(
            "Rotary position embeddings (LLaMA, Mistral, Qwen, SmolLM): before the scores, each pair of "
            "coordinates (c, c + d_k/2) of every query and key turns by position · θ^(−2c/d_k). The score q_i·k_j "
            "then depends on the positions only through i − j. Needs an even d_k."
        )
        self.theta_spin = QDoubleSpinBox(decimals=0, minimum=2, maximum=1e8, singleStep=1000.0)
        self.theta_spin.setObjectName("control.rope_theta")
        self.theta_spin.setKeyboardTracking(False)
        self.theta_spin.setToolTip(
            "The base θ of the rotation frequencies (10000 in LLaMA 2, 1e5 in SmolLM2, 5e5 in "
            "LLaMA 3). Smaller θ: every pair turns faster."
        )
        self.kv_combo = QComboBox()
        self.kv_combo.setObjectName("control.kv_heads")
        self.kv_combo.setToolTip(
            "Grouped-query attention: the query heads share this many key/value heads in equal groups. As many as "
            "query heads is ordinary multi-head attention; 1 is multi-query attention. Head thumbnails of one group "
            "share a colour."
        )
        row.addWidget(self.rotary_box, 0, 0)
        row.addWidget(self.theta_spin, 0, 1)
        row.addWidget(QLabel("kv heads"), 1, 0)
        row.addWidget(self.kv_combo, 1, 1)
        row.setColumnStretch(2, 1)
        self.rotary_box.toggled.connect(self._rotary_toggled)
        self.theta_spin.valueChanged.connect(self._theta_edited)
        self.kv_combo.activated.connect(self._kv_chosen)

    def refresh(self) -> None:
        """Show the session's settings (without turning them into edits)."""
        s = self.session
        self._updating = True
        try:
            self.rotary_box.setChecked(s.rotary)
            self.theta_spin.setValue(s.rope_theta)
            self.theta_spin.setEnabled(s.rotary)
            self.kv_combo.clear()
            for d in (d for d in range(1, s.n_heads + 1) if s.n_heads % d == 0):
                # one head: its one key/value head is its own, not multi-query
                label = f"{d}" + (" (one per head)" if d == s.n_heads else " (multi-query)" if d == 1 else "")
                self.kv_combo.addItem(label, d)
            self.kv_combo.setCurrentIndex(self.kv_combo.findData(s.n_kv_heads))
        finally:
            self._updating = False

    def _rotary_toggled(self, on: bool) -> None:
        if not self._updating:
            self._change(f"rotary positions {'on' if on else 'off'}", self.session.set_rotary, on)

    def _theta_edited(self, value: float) -> None:
        if not self._updating and value != self.session.rope_theta:
            self._change(f"rotary θ = {value:g}", self.session.set_rope_theta, value)

    def _kv_chosen(self, index: int) -> None:
        count = self.kv_combo.itemData(index)
        if not self._updating and count is not None and count != self.session.n_kv_heads:
            self._change(f"{count} key/value heads", self.session.set_n_kv_heads, int(count))
