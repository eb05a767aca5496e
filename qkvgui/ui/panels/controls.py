"""The settings above the editors: causal mask, scale, selected head (and its switch), number of heads, layers."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from qkvgui.session import Session
from qkvgui.ui.controllers.edits import EditController
from qkvgui.ui.rotary_controls import RotaryControls

SCALE_CHOICES = (("1/√d_k", "sqrt"), ("none (1)", "none"), ("custom", "custom"))


class ControlsPanel(QWidget):
    """Each control edits the session through ``edits`` (one undo step) and follows the session when it changes."""

    def __init__(self, session: Session, edits: EditController, parent: QWidget | None = None):
        super().__init__(parent)
        self.session, self.edits = session, edits
        self._updating = False  # True while controls are set from the session, so they do not echo back
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.causal_box = QCheckBox("causal mask")
        self.causal_box.setObjectName("control.causal")
        self.causal_box.setToolTip("Causal mask: a token sees only itself and earlier tokens.")
        self.causal_box.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)  # click = the text
        form.addRow(self.causal_box)
        scale_row = QHBoxLayout()
        self.scale_combo = QComboBox()
        self.scale_combo.setObjectName("control.scale")
        for text, mode in SCALE_CHOICES:
            self.scale_combo.addItem(text, mode)
        self.scale_spin = QDoubleSpinBox(decimals=4, minimum=-1e6, maximum=1e6, singleStep=0.05)
        self.scale_spin.setObjectName("control.custom_scale")
        self.scale_spin.setKeyboardTracking(False)
        scale_row.addWidget(self.scale_combo)
        scale_row.addWidget(self.scale_spin)
        form.addRow("scale scores by", scale_row)
        # RoPE on/off and θ, and key/value heads shared by groups of query heads (the LLaMA family)
        self.rotary_controls = RotaryControls(session, self._change)
        form.addRow("positions, heads", self.rotary_controls)
        head_row = QHBoxLayout()
        self.head_spin = QSpinBox(minimum=1)
        self.head_spin.setObjectName("control.head")
        self.head_spin.setToolTip("The head shown in the per-head editors and views.")
        head_row.addWidget(self.head_spin)
        head_row.addWidget(QLabel("of"))
        self.heads_spin = QSpinBox(minimum=1, maximum=64)
        self.heads_spin.setObjectName("control.heads")
        self.heads_spin.setKeyboardTracking(False)
        head_row.addWidget(self.heads_spin)
        self.ablate_box = QCheckBox("switched off")
        self.ablate_box.setObjectName("control.ablate")
        self.ablate_box.setToolTip(
            "Ablate the selected head: its output is set to zero, so it writes nothing into "
            "the residual stream. The pattern stays visible."
        )
        head_row.addWidget(self.ablate_box)
        head_row.addStretch(1)
        form.addRow("head", head_row)
        layer_row = QHBoxLayout()
        self.layer_spin = QSpinBox(minimum=1)
        self.layer_spin.setObjectName("control.layer")
        self.layer_spin.setToolTip(
            "The layer shown in the editors and views. Layer ℓ reads the residual stream after layer ℓ − 1."
        )
        self.layers_label = QLabel()
        self.add_layer_button = QPushButton("Add")
        self.add_layer_button.setObjectName("control.add_layer")
        self.add_layer_button.setToolTip("Add a layer on top of the stack (seeded random weights).")
        self.remove_layer_button = QPushButton("Remove")
        self.remove_layer_button.setObjectName("control.remove_layer")
        self.remove_layer_button.setToolTip("Remove the top layer.")
        for w in (self.layer_spin, self.layers_label, self.add_layer_button, self.remove_layer_button):
            layer_row.addWidget(w)
        layer_row.addStretch(1)
        form.addRow("layer", layer_row)

        # subscriptions, in one block
        s = session
        self.causal_box.toggled.connect(lambda on: self._change(f"causal {'on' if on else 'off'}", s.set_causal, on))
        self.scale_combo.currentIndexChanged.connect(self._scale_edited)
        self.scale_spin.valueChanged.connect(self._scale_edited)
        self.head_spin.valueChanged.connect(self._head_selected)
        self.heads_spin.valueChanged.connect(lambda v: self._change("change number of heads", s.resize, n_heads=v))
        self.ablate_box.toggled.connect(self._ablate_toggled)
        self.layer_spin.valueChanged.connect(self._layer_selected)
        self.add_layer_button.clicked.connect(lambda: self._change("add a layer", s.add_layer, seed=edits.seed()))
        self.remove_layer_button.clicked.connect(lambda: self._change("remove a layer", s.remove_layer))
        edits.refused.connect(lambda _: self.refresh())
        events = session.events
        for signal in (events.head, events.layer, events.settings, events.shape, events.layers, events.replaced):
            signal.connect(self.refresh)
        self.refresh()

    def _change(self, text: str, setter, *args, **kwargs) -> bool:
        return False if self._updating else self.edits.change(text, setter, *args, **kwargs)

    def refresh(self, *_: object) -> None:
        s = self.session
        self._updating = True
        try:
            self.causal_box.setChecked(s.causal)
            self.scale_combo.setCurrentIndex([m for _, m in SCALE_CHOICES].index(s.scale_mode))
            self.scale_spin.setValue(s.custom_scale)
            self.scale_spin.setEnabled(s.scale_mode == "custom")
            self.heads_spin.setValue(s.n_heads)
            self.rotary_controls.refresh()
            self.head_spin.setMaximum(s.n_heads)
            self.head_spin.setValue(s.head + 1)
            self.ablate_box.setChecked(bool(s.ablated()[s.head]))
            self.layer_spin.setMaximum(s.n_layers)
            self.layer_spin.setValue(s.layer + 1)
            self.layers_label.setText(f"of {s.n_layers}")
        finally:
            self._updating = False

    def _scale_edited(self, *_) -> None:
        mode = self.scale_combo.currentData()
        self.scale_spin.setEnabled(mode == "custom")
        value = self.scale_spin.value() if mode == "custom" else None
        if mode != self.session.scale_mode or (value is not None and value != self.session.custom_scale):
            self._change("change scale", self.session.set_scale, mode, value)

    def _ablate_toggled(self, off: bool) -> None:
        head = self.session.head
        self._change(f"switch head {head + 1} {'off' if off else 'on'}", self.session.set_ablated, head, off)

    def _layer_selected(self, value: int) -> None:
        if not self._updating and value - 1 != self.session.layer:
            self.session.set_layer(value - 1)

    def _head_selected(self, value: int) -> None:
        if not self._updating and value - 1 != self.session.head:
            self.session.set_head(value - 1)
