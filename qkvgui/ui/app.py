"""Starting the Qt application: builds the app and the main window, returns the event loop's exit code."""

from __future__ import annotations

import sys


def run_app(args) -> int:
    from PySide6.QtWidgets import QApplication

    from qkvgui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("qkvgui")
    app.setOrganizationName("qkvgui")
    window = MainWindow()
    window.show()
    return app.exec()
