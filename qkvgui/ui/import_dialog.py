"""File ▸ Import model layer: pick a local model folder, type a sentence, pick a layer; it loads off the GUI thread."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qkvgui.core import QkvError
from qkvgui.session import Session


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
        self.info = QLabel("BERT (BertModel) and GPT-2 (GPT2Model, GPT2LMHeadModel) checkpoints in the Hugging Face "
                           "layout.")
        self.info.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy: the forward pass has no useful fraction to show
        self.progress.hide()
        form = QFormLayout()
        form.addRow("model folder", row)
        form.addRow("sentence", self.text_edit)
        form.addRow("layers", which)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.button(QDialogButtonBox.Ok).setText("Import")
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.info)
        layout.addWidget(self.progress)
        layout.addWidget(self.buttons)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qkvgui-import")
        self._job: Future | None = None
        self._poll = QTimer(self, interval=20)
        self._poll.timeout.connect(self._collect)
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
        """Load the layer on a worker thread; the dialog stays responsive and shows that it is busy."""
        if self._job is not None:
            return
        layer = None if self.all_button.isChecked() else self.layer_spin.value() - 1
        folder, text = self.folder_edit.text(), self.text_edit.text()
        self._job = self._pool.submit(self._load, folder, layer, text)
        self.progress.show()
        self.buttons.button(QDialogButtonBox.Ok).setEnabled(False)
        self.info.setText("Reading the checkpoint and running the model…")
        self._poll.start()

    @staticmethod
    def _load(folder, layer, text):
        try:
            return Session.from_checkpoint(folder, layer, text), None
        except QkvError as e:
            return None, str(e)
        except ImportError as e:
            return None, f"Importing model layers needs the 'models' extra: pip install 'qkvgui[models]' ({e})."

    def _collect(self) -> None:
        if self._job is None or not self._job.done():
            return
        self._poll.stop()
        session, error = self._job.result()
        self._job = None
        self.progress.hide()
        self.buttons.button(QDialogButtonBox.Ok).setEnabled(True)
        if error:
            self.info.setText(error)
            return
        self.imported.emit(session)
        self.accept()

    def busy(self) -> bool:
        return self._job is not None

    def done(self, result: int) -> None:  # noqa: D401 - Qt's name
        self._poll.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().done(result)
