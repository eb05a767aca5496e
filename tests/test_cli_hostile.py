"""Export arguments that used to do harm (issue 11, item 4): exit 2 and one line each, nothing written."""

import pytest
from test_cli import qkvgui


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--scale", "40"], "--scale must be between 0.25 and 8"),  # an image too large to make
        (["--scale", "inf"], "--scale must be between 0.25 and 8"),
        (["--scale", "nan"], "--scale must be between 0.25 and 8"),
        (["--scale", "1e-9"], "--scale must be between 0.25 and 8"),  # a 167-byte PNG
        (["--scale", "-1"], "--scale must be between 0.25 and 8"),
    ],
)
def test_bad_scales_exit_2_with_one_line(tmp_path, args, words):
    out = qkvgui("export", "--preset", "induction", "--out", str(tmp_path / "figs"), *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and words in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "figs").exists()


def test_an_empty_out_is_refused_and_nothing_lands_in_the_current_folder(tmp_path):
    out = qkvgui("export", "--preset", "induction", "--out", "", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "--out needs the folder" in out.stderr
    assert list(tmp_path.iterdir()) == []
    out = qkvgui("export", "--preset", "induction", "--out", "   ", cwd=tmp_path)
    assert out.returncode == 2 and list(tmp_path.iterdir()) == []
