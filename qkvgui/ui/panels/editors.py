"""The left-hand tabs: tokens, cross-attention, padding, generators and X ("Tokens & X"), then the weights."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from qkvgui.core.format import readable_tokens
from qkvgui.session import GENERATORS, MATRICES, PER_HEAD, Session
from qkvgui.ui.controllers.edits import EditController
from qkvgui.ui.matrix_editor import MatrixEditor
from qkvgui.ui.pipeline import concat_labels, dim_labels
from qkvgui.ui.text import MAX_TOKENS_TEXT, display_text, format_tokens, parse_tokens, short_label

#: tokens that mean padding when typed: flagged as padding (hidden from every query) as they are typed
PAD_TOKENS = ("<pad>", "[pad]", "<|pad|>")
EDITOR_TIPS = {
    "X": "X: one row per token, the residual stream the layer reads. Queries (and keys, in self-attention) come "
    "from here.",
    "X_kv": "X_kv: the source sequence of cross-attention; keys and values come from here.",
    "W_Q": "W_Q (selected head): maps a token's row of X to its query, what it is looking for.",
    "W_K": "W_K (selected head): maps a token's row to its key, what it can be found by.",
    "W_V": "W_V (selected head): maps a token's row to its value, what it hands over when attended to.",
    "W_O": "W_O: maps the concatenated head outputs back to the residual stream (one block of rows per head).",
}


#: a new document with more cells than this in its editors is shown one editor per event-loop turn (each takes
#: 5-10 ms: all six at once stalled the window), the editors in view first
LAZY_CELLS = 100_000


class EditorTabs(QTabWidget):
    """The matrix editors (``editors[name]``, objectName ``editor.<name>``) and the controls of their shapes."""

    def __init__(self, session: Session, edits: EditController, parent: QWidget | None = None):
        super().__init__(parent)
        self.session, self.edits = session, edits
        self._updating = False
        self.editors: dict[str, MatrixEditor] = {}
        self._stale: list[str] = []  # editors still showing the previous document (see _on_replaced)
        self._stale_timer = QTimer(self, interval=0, singleShot=True)
        self._stale_timer.timeout.connect(self._refresh_next)
        for name in MATRICES:
            editor = MatrixEditor(name)
            editor.setObjectName(f"editor.{name}")
            editor.setToolTip(EDITOR_TIPS[name])
            editor.edit_requested.connect(lambda r, c, block, name=name: edits.edit_block(name, r, c, block))
            self.editors[name] = editor
        self.addTab(self._build_input_tab(), "Tokens && X")
        self.addTab(self._build_weights_tab(), "Weights")

        # subscriptions, in one block
        s = session
        self.tokens_edit.editingFinished.connect(lambda: self._tokens_edited(False))
        self.source_edit.editingFinished.connect(lambda: self._tokens_edited(True))
        self.cross_box.toggled.connect(
            lambda on: self._change(f"cross-attention {'on' if on else 'off'}", s.set_cross, on)
        )
        self.padding_list.itemChanged.connect(self._padding_edited)
        self.gen_button.clicked.connect(self.generate)
        self.dmodel_spin.valueChanged.connect(lambda v: self._change("change d_model", s.resize, d_model=v))
        self.dk_spin.valueChanged.connect(lambda v: self._change("change d_k", s.resize, d_k=v))
        self.dv_spin.valueChanged.connect(lambda v: self._change("change d_v", s.resize, d_v=v))
        self.randomize_button.clicked.connect(
            lambda: self._change("randomize weights", s.randomize_weights, seed=edits.seed())
        )
        edits.refused.connect(lambda _: self.refresh_controls())
        events = session.events
        events.matrix.connect(self._on_matrix_changed)
        events.head.connect(self._on_head_changed)
        events.layer.connect(self._on_layer_changed)
        for signal in (
            events.tokens,
            events.source_tokens,
            events.shape,
            events.settings,
            events.layers,
        ):
            signal.connect(self.refresh)
        events.replaced.connect(self._on_replaced)
        self.refresh()

    # ---- building ----------------------------------------------------------------------------------------
    _token_text: dict[int, str]

    def _build_input_tab(self) -> QWidget:
        self._token_text = {}
        tab = QWidget()
        layout = QVBoxLayout(tab)
        form = QFormLayout()
        self.tokens_edit = QLineEdit()
        self.tokens_edit.setObjectName("control.tokens")
        self.tokens_edit.setToolTip(
            'The tokens, separated by spaces ("new york" in quotes is one token). Press Enter '
            "to apply; X gains or loses rows."
        )
        form.addRow("tokens", self.tokens_edit)
        self.cross_box = QCheckBox("cross-attention")
        self.cross_box.setObjectName("control.cross")
        self.cross_box.setToolTip("Cross-attention: keys and values come from a source sequence (X_kv).")
        self.cross_box.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        form.addRow(self.cross_box)
        self.cross_warning = QLabel(
            "⚠ The causal mask is on: decoders do not mask cross-attention (every target token may read the whole "
            "source), so keys hidden here by position are an artefact, not a model's behaviour."
        )
        self.cross_warning.setObjectName("control.cross_warning")
        self.cross_warning.setWordWrap(True)
        self.cross_warning.hide()
        form.addRow(self.cross_warning)
        self.source_edit = QLineEdit()
        self.source_edit.setObjectName("control.source_tokens")
        self.source_edit.setToolTip(
            'The source tokens of cross-attention, separated by spaces ("new york" in quotes '
            "is one token); Enter applies."
        )
        for edit in (self.tokens_edit, self.source_edit):
            # Qt's default cap (32,767 characters) cut longer text silently; a paste beyond this one is refused
            edit.setMaxLength(MAX_TOKENS_TEXT)
            edit.inputRejected.connect(lambda edit=edit: self._token_text_rejected(edit))
            # the text before each change (inputRejected comes after the cut insert, before textChanged)
            edit.textChanged.connect(lambda text, edit=edit: self._token_text.__setitem__(id(edit), text))
        form.addRow("source", self.source_edit)
        self.padding_list = QListWidget()
        self.padding_list.setObjectName("control.padding")
        self.padding_list.setFlow(QListWidget.Flow.LeftToRight)
        self.padding_list.setWrapping(True)
        self.padding_list.setLayoutMode(QListWidget.LayoutMode.Batched)  # thousands of tokens: laid out in steps
        self.padding_list.setBatchSize(128)
        self.padding_list.setMaximumHeight(52)
        self.padding_list.setToolTip("Tick a key token to mark it as padding: no query may attend to it.")
        form.addRow("padding", self.padding_list)
        gen_row = QHBoxLayout()
        self.gen_combo = QComboBox()
        self.gen_combo.addItems(GENERATORS)
        self.gen_combo.setObjectName("control.generator")
        self.gen_target = QComboBox()
        self.gen_target.addItems(["X", "X_kv"])
        self.gen_button = QPushButton("Fill")
        self.gen_button.setObjectName("control.generate")
        self.gen_button.setToolTip(
            "Fill X (or X_kv) with one-hot token and position features, sinusoidal "
            "positions, seeded random numbers or zeros."
        )
        self.dmodel_spin = QSpinBox(minimum=1, maximum=4096)
        self.dmodel_spin.setObjectName("control.d_model")
        self.dmodel_spin.setKeyboardTracking(False)
        gen_row.addWidget(self.gen_target)
        gen_row.addWidget(self.gen_combo)
        gen_row.addWidget(self.gen_button)
        gen_row.addStretch(1)
        form.addRow("fill", gen_row)
        form.addRow("d_model", self.dmodel_spin)
        layout.addLayout(form)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.editors["X"])
        split.addWidget(self.editors["X_kv"])
        layout.addWidget(split, 1)
        return tab

    def _build_weights_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        dims = QHBoxLayout()
        self.dk_spin = QSpinBox(minimum=1, maximum=1024)
        self.dk_spin.setObjectName("control.d_k")
        self.dk_spin.setKeyboardTracking(False)
        self.dv_spin = QSpinBox(minimum=1, maximum=1024)
        self.dv_spin.setObjectName("control.d_v")
        self.dv_spin.setKeyboardTracking(False)
        dims.addWidget(QLabel("d_k"))
        dims.addWidget(self.dk_spin)
        dims.addWidget(QLabel("d_v"))
        dims.addWidget(self.dv_spin)
        self.randomize_button = QPushButton("Randomize")
        self.randomize_button.setObjectName("control.randomize")
        self.randomize_button.setToolTip("Randomize all weights: W_Q, W_K, W_V of every head and W_O (seeded).")
        dims.addStretch(1)
        dims.addWidget(self.randomize_button)
        layout.addLayout(dims)
        split = QSplitter(Qt.Orientation.Vertical)
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            split.addWidget(self.editors[name])
        layout.addWidget(split, 1)
        return tab

    # ---- edits -------------------------------------------------------------------------------------------
    def _change(self, text: str, setter, *args, **kwargs) -> bool:
        return False if self._updating else self.edits.change(text, setter, *args, **kwargs)

    def _tokens_edited(self, source: bool) -> None:
        edit = self.source_edit if source else self.tokens_edit
        if not edit.isModified():  # Enter in an unchanged field changes nothing (it re-split tokens with spaces)
            return
        try:
            tokens = parse_tokens(edit.text())
        except ValueError as e:
            self.edits.refused.emit(f"The {'source ' if source else ''}tokens were not changed: {e}.")
            return
        current = self.session.source_tokens if source else self.session.tokens
        # the field shows a byte-level BPE model's tokens readably ("␣the"): a token left as shown is the raw one
        raw_of = dict(zip(readable_tokens(current), current, strict=True))
        tokens = [raw_of.get(t, t) for t in tokens]
        if tokens != current:
            self._change("edit source tokens" if source else "edit tokens", self._set_tokens, tokens, source)
        edit.setModified(False)

    def _token_text_rejected(self, edit: QLineEdit) -> None:
        """A paste longer than the field holds: Qt has cut it; put back the text from before it, and say so."""
        before, modified = self._token_text.get(id(edit), ""), edit.isModified()

        def restore() -> None:
            edit.setText(before)
            edit.setModified(modified)

        QTimer.singleShot(0, restore)  # after Qt has finished the cut insert
        self.edits.refused.emit(
            f"That text is longer than the {edit.maxLength():,} characters a token field holds: nothing was pasted."
        )

    def _show_tokens(self, edit: QLineEdit, tokens: list[str]) -> None:
        """The tokens as the field's text, exactly (quoted where needed), or read-only when they are too long; a
        byte-level BPE model's tokens read "␣the" for "Ġthe" (see _tokens_edited for the way back)."""
        text = format_tokens(readable_tokens(tokens))
        if len(text) > MAX_TOKENS_TEXT:
            edit.setText("")
            edit.setReadOnly(True)
            edit.setPlaceholderText(f"{len(tokens)} tokens, {len(text):,} characters: too long to edit here")
        else:
            edit.setReadOnly(False)
            edit.setPlaceholderText("")
            edit.setText(text)  # clears isModified: an unchanged field applies nothing
            if not edit.hasFocus():
                edit.setCursorPosition(0)  # a long sentence shows its beginning, not its end

    def _set_tokens(self, tokens: list[str], source: bool) -> None:
        """New tokens, and padding tokens typed as such ("<pad>", "[PAD]") flagged as padding: one undo step."""
        s = self.session
        s.set_tokens(tokens, source=source)
        pads = [t.lower() in PAD_TOKENS for t in tokens]
        if any(pads) and (source or not s.cross):  # the flags belong to the keys' sequence
            flags = [a or b for a, b in zip(s.key_padding, pads, strict=True)]
            if flags != list(s.key_padding):
                s.set_padding(flags)

    def _padding_edited(self, _item=None) -> None:
        if self._updating:
            return
        mask = [
            self.padding_list.item(i).checkState() == Qt.CheckState.Checked for i in range(self.padding_list.count())
        ]
        self._change("change padding", self.session.set_padding, mask)

    def generate(self) -> None:
        """Fill X or X_kv with the chosen generator (the Fill button)."""
        target, kind = self.gen_target.currentText(), self.gen_combo.currentText()
        self._change(f"fill {target} with {kind}", self.session.generate, target, kind, seed=self.edits.seed())

    # ---- following the session ---------------------------------------------------------------------------
    def show_editor(self, name: str) -> MatrixEditor:
        """Bring a matrix editor into view (switching to its tab) and return it."""
        editor = self.editors[name]
        for i in range(self.count()):
            page = self.widget(i)
            if page is not None and page.isAncestorOf(editor):
                self.setCurrentIndex(i)
        return editor

    def _on_matrix_changed(self, name: str) -> None:
        if name in self.editors:
            self.refresh_editor(name)
        else:  # a bias: no editor of its own
            self.refresh()

    def _on_head_changed(self, _head: int) -> None:
        for name in PER_HEAD:
            self.refresh_editor(name)

    def _on_layer_changed(self, _layer: int) -> None:
        for name in (*PER_HEAD, "W_O"):
            self.refresh_editor(name)
        self.refresh_controls()

    def refresh(self, *_: object) -> None:
        for name in MATRICES:
            self.refresh_editor(name)
        self.refresh_controls()

    def _on_replaced(self) -> None:
        """A new document: a small one is shown at once, a large one editor by editor (see LAZY_CELLS)."""
        s = self.session
        if sum(s.matrix(name).size for name in MATRICES) <= LAZY_CELLS:
            self.refresh()
            return
        self.refresh_controls()
        first = ("X", "X_kv") if self.currentIndex() == 0 else ()
        self._stale = [*first, *(name for name in MATRICES if name not in first)]
        self._stale_timer.start()

    def _refresh_next(self) -> None:
        if self._stale:
            self.refresh_editor(self._stale[0])
        if self._stale:
            self._stale_timer.start()

    def pending(self) -> bool:
        """True while some editor still shows the previous document (a large new one is shown one per turn)."""
        return bool(self._stale)

    def flush(self) -> None:
        """Show the document in every editor now (scripts, tests, and anything about to read an editor)."""
        while self._stale:
            self.refresh_editor(self._stale[0])

    def refresh_editor(self, name: str) -> None:
        if name in self._stale:
            self._stale.remove(name)
        s = self.session
        m = s.matrix(name)
        editor = self.editors[name]
        features = s.features  # the residual stream's columns: d0, d1, … or a preset's feature names
        if name == "X":  # rows named as a reader reads the tokens ("␣the" for "Ġthe"); the token field keeps them raw
            editor.set_matrix(m, readable_tokens(s.tokens), features)
        elif name == "X_kv":
            editor.set_matrix(m, readable_tokens(s.source_tokens), features)
            editor.setVisible(s.cross)
        elif name == "W_O":
            editor.set_matrix(m, concat_labels(s.n_heads, s.d_v), features)
            editor.set_title(f"W_O (layer {s.layer + 1})" if s.n_layers > 1 else "W_O")
        else:
            # With shared key/value heads (GQA) query head h edits W_K/W_V of its group s.kv_head(), as set_block does.
            shared = name != "W_Q" and s.n_kv_heads < s.n_heads
            head = s.kv_head() if name != "W_Q" else s.head
            editor.set_matrix(m[head], features, dim_labels(m.shape[2]))
            layer = f"layer {s.layer + 1}, " if s.n_layers > 1 else ""
            which = f"kv head {head + 1}, shared by head {s.head + 1}" if shared else f"head {s.head + 1}"
            editor.set_title(f"{name} ({layer}{which})")

    def refresh_controls(self) -> None:
        s = self.session
        self._updating = True
        try:
            self.cross_box.setChecked(s.cross)
            self.dmodel_spin.setValue(s.d_model)
            self.dk_spin.setValue(s.d_k)
            self.dv_spin.setValue(s.d_v)
            self._show_tokens(self.tokens_edit, s.tokens)
            self._show_tokens(self.source_edit, s.source_tokens)
            self.source_edit.setEnabled(s.cross)
            self.cross_warning.setVisible(s.cross and s.causal)
            self.editors["X_kv"].setVisible(s.cross)
            self.padding_list.clear()
            # Qt's flags and enums computed once: per token they were most of a large document's showing
            flags = QListWidgetItem().flags() | Qt.ItemFlag.ItemIsUserCheckable
            checked, unchecked = Qt.CheckState.Checked, Qt.CheckState.Unchecked
            for token, shown, pad in zip(s.key_tokens, readable_tokens(s.key_tokens), s.key_padding, strict=True):
                label = short_label(shown)  # "␣the" for a byte-level BPE model's "Ġthe"
                item = QListWidgetItem(label)
                if label != token:  # the whole (raw) token where the label is cut or made readable
                    item.setToolTip(display_text(token, 400))
                item.setFlags(flags)
                item.setCheckState(checked if pad else unchecked)
                self.padding_list.addItem(item)
        finally:
            self._updating = False
