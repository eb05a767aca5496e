"""The main window (placeholder until the explorer lands)."""

from PySide6.QtWidgets import QLabel, QMainWindow


class MainWindow(QMainWindow):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("qkvgui")
        self.setCentralWidget(QLabel("qkvgui: the explorer window is being built."))
