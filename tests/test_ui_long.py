"""Long inputs in the window: the selected head's steps come from the worker, and no view builds every head's."""

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from qkvgui.core.format import format_number
from qkvgui.ui.bench_gui import _layer_state


def _settled(window, n):
    r = window.result
    return r is not None and r.n_q == n and not window.pipeline.drawing() and not window.scheduler.busy_now()


def test_a_long_layer_shows_the_selected_head_without_building_every_head(window, qtbot):
    n = 600  # one head's four steps are 11 MB: computed on the worker, not in the GUI thread
    window.session.set_state(_layer_state(window.session.state(), n, 32, 4, 8))
    qtbot.waitUntil(lambda: _settled(window, n), timeout=30000)
    r = window.result
    assert r.head_ready(0)  # the worker computed the selected head along with the layer
    np.testing.assert_array_equal(window.views["weights"].data(), r.head(0).weights)
    np.testing.assert_array_equal(window.views["masked"].data(), r.head(0).masked)

    window.session.set_head(2)
    qtbot.waitUntil(lambda: "head 3" in window.views["weights"].title() and _settled(window, n), timeout=30000)
    np.testing.assert_array_equal(window.views["weights"].data(), window.result.head(2).weights)
    np.testing.assert_array_equal(window.views["scores"].data(), window.result.head(2).scores)
    assert "head 3" in window.views["head_outputs"].title()

    # Every head at a glance: pooled 3 × 3 (600 tokens > 256), the maximum of each block.
    assert r.pool == 3
    np.testing.assert_array_equal(window.pipeline.head_views[1].data(), r.weights_pooled[1])
    assert window.pipeline.head_views[1].data().shape == (200, 200)
    # No view asked for all heads' n × n steps at once.
    assert not window.result._cache.fields


def test_hovering_a_weight_of_a_long_layer_explains_it(window, qtbot):
    n = 300
    window.session.set_state(_layer_state(window.session.state(), n, 16, 2, 4))
    qtbot.waitUntil(lambda: _settled(window, n), timeout=30000)
    window.inspection.inspect_cell("weights", 299, 5, False)  # what hovering that cell does
    text = window.inspector.toPlainText()
    assert "Query 300" in text  # the 300th token: counted from 1
    assert format_number(window.result.head(0).weights[299, 5]) in text


def test_import_takes_text_up_to_the_models_context_and_refuses_more(qtbot, window, tmp_path):
    import pytest

    pytest.importorskip("safetensors")
    from tiny_gpt2 import CONFIG, write_tiny_gpt2

    from qkvgui.ui.import_dialog import ImportLayerDialog

    folder = write_tiny_gpt2(tmp_path / "tiny-gpt2")
    dialog = ImportLayerDialog(window)
    qtbot.addWidget(dialog)
    dialog.folder_edit.setText(str(folder))
    dialog._folder_changed()
    context = CONFIG["n_positions"]
    assert f"up to {context} tokens" in dialog.info.text()
    long_text = "the cat sat on the mat " * 20_000  # 460,000 characters: the field keeps them all
    dialog.text_edit.setText(long_text)
    assert dialog.text_edit.text() == long_text
    dialog.start()
    qtbot.waitUntil(lambda: not dialog.busy(), timeout=20000)
    assert f"at most {context}" in dialog.info.text()  # refused with the model's limit, nothing replaced
    dialog.text_edit.setText(" ".join(["the", "cat", "sat", "on", "the", "mat"] * (context // 6)))
    dialog.imported.connect(window.show_imported)
    dialog.start()
    qtbot.waitUntil(lambda: not dialog.busy(), timeout=20000)
    qtbot.waitUntil(lambda: len(window.session.tokens) == context, timeout=20000)


def test_cancel_stops_a_whole_model_import_between_layers(qtbot, window, tmp_path, monkeypatch):
    # The tiny GPT-2 has 3 layers. The first layer's attention waits until the user has pressed Cancel; the
    # forward pass must then stop before layer 2 instead of running to the end and being thrown away.
    import threading

    import pytest

    pytest.importorskip("safetensors")
    from tiny_gpt2 import CONFIG, write_tiny_gpt2

    import qkvgui.core.models as models
    import qkvgui.io.checkpoints as checkpoints
    from qkvgui.ui.import_dialog import ImportLayerDialog

    folder = write_tiny_gpt2(tmp_path / "tiny-gpt2")
    computed, pressed, ended = [], threading.Event(), threading.Event()
    attention, run = models.multi_head_attention, checkpoints.run

    def slow_attention(*args, **kwargs):
        computed.append(1)
        pressed.wait(20)  # the user presses Cancel while this layer runs
        return attention(*args, **kwargs)

    def watched_run(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        finally:
            ended.set()

    monkeypatch.setattr(models, "multi_head_attention", slow_attention)
    monkeypatch.setattr(checkpoints, "run", watched_run)
    tokens_before = list(window.session.tokens)
    dialog = ImportLayerDialog(window, folder=str(folder), text="the cat sat on the mat")
    qtbot.addWidget(dialog)
    dialog.all_button.setChecked(True)
    dialog.imported.connect(window.show_imported)
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: len(computed) == 1, timeout=20000)
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    pressed.set()
    assert ended.wait(20)
    assert len(computed) == 1 < CONFIG["n_layer"]  # stopped after the layer that was running
    qtbot.wait(50)
    assert window.session.tokens == tokens_before  # nothing was imported


def test_a_layer_progress_that_raises_stops_the_forward_pass(tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("safetensors")
    from tiny_gpt2 import CONFIG, write_tiny_gpt2

    import qkvgui.core.models as models
    from qkvgui import Session

    folder = write_tiny_gpt2(tmp_path / "tiny-gpt2")
    computed, told = [], []
    attention = models.multi_head_attention
    monkeypatch.setattr(models, "multi_head_attention", lambda *a, **k: computed.append(1) or attention(*a, **k))

    class Stop(Exception):
        pass

    def progress(done, total):
        told.append((done, total))
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        Session.from_checkpoint(folder, None, "the cat sat on the mat", progress=progress)
    assert len(computed) == 2 and told == [(0, 3), (1, 3), (2, 3)]  # stopped before the third layer
    told.clear()
    Session.from_checkpoint(folder, None, "the cat sat on the mat", progress=lambda done, total: told.append(done))
    assert told == list(range(CONFIG["n_layer"] + 1))  # told before each layer and once at the end
