"""File ▸ Import model layer: pick a local model folder, type a sentence, pick a layer; it loads off the GUI thread."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qkvgui.core import QkvError
from qkvgui.session import Session
from qkvgui.ui.jobs import JobRunner, Progress


class ImportLayerDialog(QDialog):
    """Asks for a model folder, a sentence and a layer; emits ``imported(session)`` when the layer has loaded."""

    imported = Signal(object)

    def __init__(self, parent: QWidget | None = None, folder: str = "", text: str = "", layer: int | None = None):
        super().__init__(parent)
        self.setWindowTitle("Import model")
        self.setObjectName("dialog.import_layer")
        self.folder_edit = QLineEdit(folder)
        self.folder_edit.setObjectName("import.folder")
        self.folder_edit.setPlaceholderText("a folder with config.json, model.safetensors, tokenizer.json")
        self.folder_edit.editingFinished.connect(self._folder_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        self.text_edit = QLineEdit(text or "The cat sat on the mat because it was tired.")
        self.text_edit.setObjectName("import.text")
        # A model's whole context (1,024 GPT-2 tokens, thousands for LLaMA) is far more than QLineEdit's default
        # 32,767 characters; the model's own limit is checked on import.
        self.text_edit.setMaxLength(1 << 22)
        self.layer_spin = QSpinBox(minimum=1, maximum=1)
        self.layer_spin.setObjectName("import.layer")
        self.all_button = QRadioButton("all layers: the whole model, its own blocks between the layers")
        self.all_button.setObjectName("import.all_layers")
        self.one_button = QRadioButton("one layer:")
        self.one_button.setObjectName("import.one_layer")
        self.all_button.setChecked(layer is None)
        self.one_button.setChecked(layer is not None)
        self.one_button.toggled.connect(self.layer_spin.setEnabled)
        self.layer_spin.setEnabled(layer is not None)
        which = QVBoxLayout()
        which.addWidget(self.all_button)
        one = QHBoxLayout()
        one.addWidget(self.one_button)
        one.addWidget(self.layer_spin)
        one.addStretch(1)
        which.addLayout(one)
        self.info = QLabel(
            "BERT (BertModel) and GPT-2 (GPT2Model, GPT2LMHeadModel) checkpoints in the Hugging Face layout."
        )
        self.info.setWordWrap(True)
        # The import runs on a worker: a busy bar and Cancel while it does; any failure (a hostile config, bfloat16
        # weights, a bug) ends it with a message and Import enabled again, never a bar spinning forever.
        self.jobs = JobRunner(None, self)
        self.progress = self.jobs.widget
        form = QFormLayout()
        form.addRow("model folder", row)
        form.addRow("sentence", self.text_edit)
        form.addRow("layers", which)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Import")
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.info)
        layout.addWidget(self.progress)
        layout.addWidget(self.buttons)
        if folder:
            self._folder_changed()
        self.layer_spin.setValue((layer or 0) + 1)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)
            self._folder_changed()

    def _folder_changed(self) -> None:
        from qkvgui.io.checkpoint import checkpoint_info

        try:
            info = checkpoint_info(self.folder_edit.text())
        except QkvError as e:
            self.info.setText(str(e))
            return
        self.layer_spin.setMaximum(info["layers"])
        self.info.setText(f"{info['label']}, {info['layers']} layers, up to {info['positions']} tokens.")

    def start(self) -> None:
        """Load the layer on a worker thread; the dialog stays responsive, shows that it is busy, and can cancel."""
        if self.jobs.busy():
            return
        layer = None if self.all_button.isChecked() else self.layer_spin.value() - 1
        folder, text = self.folder_edit.text(), self.text_edit.text()
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(False)
        self.info.setText("Reading the checkpoint and running the model…")
        self.jobs.run(
            "Importing the model",
            lambda progress: self._load(folder, layer, text, progress),
            self._loaded,
            self._failed,
        )

    @staticmethod
    def _load(folder, layer, text, progress: Progress | None = None):
        def layer_done(done: int, total: int) -> None:
            """Between the model's layers: the bar moves, and Cancel stops the forward pass here."""
            if progress is not None:
                progress(done, total, f"Running the model: layer {min(done + 1, total)} of {total}…")
                progress.check()

        try:
            return Session.from_checkpoint(folder, layer, text, progress=layer_done)
        except ImportError as e:
            raise QkvError(
                f"Importing model layers needs the 'models' extra: pip install 'qkvgui[models]' ({e})."
            ) from None

    def _failed(self, message: str) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(True)
        self.info.setText(message)

    def _loaded(self, session) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(True)
        self.imported.emit(session)
        self.accept()

    def busy(self) -> bool:
        return self.jobs.busy()

    def done(self, result: int) -> None:  # noqa: D401 - Qt's name
        self.jobs.shutdown()
        super().done(result)
