"""The export dialog and the step-through window, used as a teacher would: settings change the live preview, the
file written is what the dialog says, settings come back next time, and the steps walk with the keyboard."""

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QImage

from qkvgui import Session
from qkvgui.io.animation import STEPS
from qkvgui.ui.export_dialog import ExportFigureDialog
from qkvgui.ui.step_through import AnimationExport, StepThroughDialog


def wait_preview(qtbot, preview):
    qtbot.waitUntil(lambda: not preview.busy() and not preview.image().isNull(), timeout=10000)


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def make_dialog(qtbot, session, settings, **kw):
    d = ExportFigureDialog(session, settings=settings, **kw)
    qtbot.addWidget(d)
    d.show()
    qtbot.waitExposed(d)
    wait_preview(qtbot, d.preview)
    return d


def test_preview_follows_the_settings(qtbot, settings):
    d = make_dialog(qtbot, Session(), settings)
    light = d.preview.image()
    corner = light.pixelColor(1, 1)
    assert (corner.red(), corner.green(), corner.blue()) == (255, 255, 255)
    d.theme.setCurrentIndex(d.theme.findData("dark"))
    qtbot.waitUntil(lambda: not d.preview.busy() and d.preview.image().pixelColor(1, 1).red() < 60, timeout=10000)
    # the preview has the figure's aspect: a tall page gives a tall picture
    d.unit.setCurrentText("px")
    d.width_box.setValue(600)
    d.height_box.setValue(1200)
    qtbot.waitUntil(
        lambda: not d.preview.busy() and d.preview.image().height() > d.preview.image().width(), timeout=10000
    )


def test_export_writes_the_chosen_view_at_the_chosen_size(qtbot, settings, tmp_path):
    d = make_dialog(qtbot, Session(), settings)
    d.view.setCurrentIndex(d.view.findData("ov_circuit"))  # never shown in any window
    d.unit.setCurrentText("cm")
    d.width_box.setValue(8.5)
    d.height_box.setValue(6.5)
    d.dpi.setValue(300)
    with qtbot.waitSignal(d.exported, timeout=10000) as done:
        d.export_to(tmp_path / "ov.png")
    image = QImage(done.args[0])
    assert (image.width(), image.height()) == (round(8.5 / 2.54 * 300), round(6.5 / 2.54 * 300))
    assert image.dotsPerMeterX() == pytest.approx(300 / 0.0254, abs=1)
    a = np.frombuffer(image.convertToFormat(QImage.Format.Format_RGB888).constBits(), np.uint8)
    assert a.std() > 20  # a circuit heatmap, not a blank plot


def test_settings_are_remembered(qtbot, settings, tmp_path):
    d = make_dialog(qtbot, Session(), settings)
    d.view.setCurrentIndex(d.view.findData("weights"))
    d.heads.setCurrentIndex(d.heads.findData("all"))
    d.font_pt.setValue(14)
    d.numbers.setChecked(False)
    d.theme.setCurrentIndex(d.theme.findData("transparent"))
    d.format.setCurrentIndex(d.format.findData("svg"))
    d.close()
    settings.sync()
    again = make_dialog(qtbot, Session(), settings)
    assert again.view.currentData() == "weights"
    assert again.heads.currentData() == "all"
    assert again.font_pt.value() == 14
    assert not again.numbers.isChecked()
    assert again.theme.currentData() == "transparent"
    assert again.format.currentData() == "svg"
    # and the window's quick export and copy use the same choice
    from qkvgui.ui.export_dialog import saved_choice

    view, options = saved_choice(settings)
    assert view == "weights" and options.heads == "all" and options.font_pt == 14 and not options.numbers


def test_unit_change_keeps_the_physical_size(qtbot, settings):
    d = make_dialog(qtbot, Session(), settings)
    d.unit.setCurrentText("px")
    d.dpi.setValue(96)
    d.width_box.setValue(960)
    d.unit.setCurrentText("in")
    assert d.width_box.value() == pytest.approx(10.0)
    d.unit.setCurrentText("cm")
    assert d.width_box.value() == pytest.approx(25.4)


def test_a_bad_figure_is_a_message_not_a_crash(qtbot, settings):
    d = make_dialog(qtbot, Session(), settings)
    d.font_pt.setValue(48)
    d.unit.setCurrentText("px")
    d.width_box.setValue(20)
    d.height_box.setValue(20)
    qtbot.waitUntil(lambda: "too small" in d.info.text(), timeout=5000)


def test_step_through_walks_the_steps_with_the_keyboard(qtbot):
    s = Session()
    w = StepThroughDialog(s)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    wait_preview(qtbot, w.figure_view)
    assert "Step 1 of 10" in w.narration.text()
    first = w.figure_view.image()
    w.activateWindow()
    w.steps.setFocus()
    qtbot.keyClick(w, Qt.Key.Key_Right)
    qtbot.keyClick(w, Qt.Key.Key_Right)
    assert w.current() == 2 and "Step 3 of 10: scores" in w.narration.text()
    wait_preview(qtbot, w.figure_view)
    assert w.figure_view.image() != first
    qtbot.keyClick(w, Qt.Key.Key_End)
    assert w.current() == len(STEPS) - 1 and not w.next.isEnabled()
    # an edit retells the step with the new numbers
    w.go(5)
    before = w.narration.text()
    s.set_block("W_K", 0, 0, [[5.0]], head=0)  # the keys of "the" change
    assert w.narration.text() != before and "softmax" in w.narration.text().lower()


def test_animation_export_runs_off_the_gui_thread_and_can_be_cancelled(qtbot, tmp_path):
    from qkvgui.io.figure_paint import FigureOptions

    small = FigureOptions(480, 270, font_pt=6)
    job = AnimationExport(Session(), tmp_path / "a.gif", options=small)
    with qtbot.waitSignal(job.finished, timeout=30000) as done:
        job.start()
    assert done.args == [str(tmp_path / "a.gif"), ""]
    assert (tmp_path / "a.gif").stat().st_size > 1000
    job = AnimationExport(Session(), tmp_path / "b.gif", options=small)
    job.cancel()
    with qtbot.waitSignal(job.finished, timeout=30000) as done:
        job.start()
    assert done.args[1] == "cancelled" and not (tmp_path / "b.gif").exists()
