"""Linked inspection: hovering (or clicking, to pin) a cell explains it in the inspector and lights up its sources."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel, QTextBrowser

from qkvgui.core.format import readable_tokens
from qkvgui.session import Session
from qkvgui.ui.explain import explain_cell, explain_output_row, explain_score, view_formula
from qkvgui.ui.panels.views import ViewsPanel
from qkvgui.ui.pipeline import SCORE_VIEWS, SPECS
from qkvgui.ui.text import display_text

PLACEHOLDER = (
    "Hover a cell of scores, scaled, masked or weights to see how it was made; hover a head output row "
    "to see its weighted sum of V rows."
)


def make_inspector() -> QTextBrowser:
    inspector = QTextBrowser()
    inspector.setObjectName("inspector")
    inspector.setPlaceholderText(PLACEHOLDER)
    inspector.setMinimumHeight(36)  # a focused view may take the room; the splitter gives it back
    return inspector


class InspectorController(QObject):
    """Follows the hover and click signals of the pipeline's views; a pinned cell is re-explained after redraws.

    ``message(text)`` says when an edit takes the session away from its preset's claim (or undo brings it back);
    the description in the inspector then carries the note."""

    message = Signal(str)

    def __init__(self, session: Session, panel: ViewsPanel, inspector: QTextBrowser, parent: QObject | None = None):
        super().__init__(parent)
        self.session, self.panel, self.inspector = session, panel, inspector
        self.views = panel.views
        self.pinned: tuple[str, int, int] | None = None
        self.hovered: tuple[str, int, int] | None = None  # re-explained after a redraw, as a pinned cell is

        # subscriptions, in one block
        for name in SCORE_VIEWS:
            self.views[name].cell_hovered.connect(lambda i, j, name=name: self.inspect_cell(name, i, j, False))
            self.views[name].cell_clicked.connect(lambda i, j, name=name: self.inspect_cell(name, i, j, True))
        self.views["head_outputs"].cell_hovered.connect(lambda i, j: self.inspect_row(i))
        self.views["head_outputs"].cell_clicked.connect(lambda i, j: self.inspect_row(i, pin=True))
        for name in ("q", "k", "v", "concat", "output", "residual", "block"):
            self.views[name].cell_hovered.connect(lambda i, j, name=name: self.inspect_value(name, i, j))
        self.claim_note = ""  # the session's preset_note() when last checked
        #: shown in the status bar while the session is edited away from its preset's claim (the note as tooltip)
        self.claim_label = QLabel()
        self.claim_label.setObjectName("status.preset_claim")
        self.claim_label.hide()
        panel.redrawn.connect(self.refresh_pinned)
        panel.redrawn.connect(self.check_claim)

    def refresh_pinned(self) -> None:
        """After a redraw (an edit, a setting): explain the pinned cell again, or the one under the mouse."""
        target = self.pinned or self.hovered
        if target is None:
            return
        kind, i, j = target
        if kind == "row":
            self.inspect_row(i)
        elif kind in SCORE_VIEWS:
            self.inspect_cell(kind, i, j, False)
        else:
            self.inspect_value(kind, i, j)

    def inspect_cell(self, view: str, i: int, j: int, pin: bool) -> None:
        r = self.panel.result
        self.hovered = (view, i, j) if i >= 0 else None
        if pin:
            self.pinned = (view, i, j) if i >= 0 else None
        if i < 0 or r is None or i >= r.n_q or j >= r.n_k or not r.head_ready(self.session.head):
            if self.pinned is not None and not pin:
                kind, pi, pj = self.pinned
                if kind != "row":
                    self.inspect_cell(kind, pi, pj, False)
                return
            self.clear_highlights()
            return
        head = self.session.head
        for name in SCORE_VIEWS:
            self.views[name].highlight(cell=(i, j))
        self.views["q"].highlight(rows=[i])
        self.views["k"].highlight(rows=[j])
        self.views["v"].highlight()
        self.views["head_outputs"].highlight()
        header = f"<b>{view_formula(view, r)}</b><br>{SPECS[view].tip}<br>"
        self.inspector.setHtml(header + explain_score(r, head, i, j, *self._tokens()))

    def inspect_row(self, i: int, pin: bool = False) -> None:
        r = self.panel.result
        self.hovered = ("row", i, -1) if i >= 0 else None
        if pin:
            self.pinned = ("row", i, -1) if i >= 0 else None
        if i < 0 or r is None or i >= r.n_q or not r.head_ready(self.session.head):
            return
        head = self.session.head
        visible_keys = [int(j) for j in (r.head(head).weights[i] > 0).nonzero()[0]]
        self.views["weights"].highlight(rows=[i])
        self.views["head_outputs"].highlight(rows=[i])
        self.views["v"].highlight(rows=visible_keys)
        self.inspector.setHtml(explain_output_row(r, head, i, *self._tokens()))

    def inspect_value(self, name: str, i: int, j: int) -> None:
        """Hovering Q, K, V, concat, output or residual: the formula with shapes, what a row means, the value."""
        view = self.views[name]
        result = self.panel.result
        self.hovered = (name, i, j) if i >= 0 else None
        if i < 0 or result is None:
            return
        data = view.data()
        if i >= data.shape[0] or j >= data.shape[1]:
            return
        rows, cols = view.row_labels(), view.col_labels()
        self.inspector.setHtml(explain_cell(name, SPECS[name].tip, result, data[i, j], i, j, rows[i], cols[j]))

    def _show_claim_label(self) -> None:
        self.claim_label.setText(f"⚠ edited away from the '{self.session.preset}' preset" if self.claim_note else "")
        self.claim_label.setToolTip(self.claim_note)
        self.claim_label.setVisible(bool(self.claim_note))

    def _tokens(self) -> tuple[list[str], list[str]]:
        """The query and key tokens as the views name them ("␣the" for a byte-level BPE model's "Ġthe")."""
        return readable_tokens(self.session.tokens), readable_tokens(self.session.key_tokens)

    def clear_highlights(self) -> None:
        for view in self.views.values():
            view.highlight()

    def show_description(self) -> None:
        """A preset (or a session with a title) says what it demonstrates when it is opened, and whether the
        session has been edited away from what it says (``Session.preset_note``)."""
        self.claim_note = self.session.preset_note()
        self._show_claim_label()
        if self.session.title:
            # capped and breakable: a 15 MiB one-word description took minutes to lay out
            title, description = display_text(self.session.title, 400), display_text(self.session.description)
            note = f"<p><b>⚠ {escape(self.claim_note)}</b></p>" if self.claim_note else ""
            self.inspector.setHtml(f"<h3>{escape(title)}</h3><p>{escape(description)}</p>{note}")

    def check_claim(self) -> None:
        """After a redraw: when an edit took the session away from its preset's claim, or undo brought it back,
        say so in the status bar and show the description again with its note (unless a cell is pinned)."""
        note = self.session.preset_note()
        if note == self.claim_note:
            return
        self.claim_note = note
        self._show_claim_label()
        self.message.emit(note or f"This session is the '{self.session.preset}' preset again: its description holds.")
        if self.pinned is None:
            self.show_description()
