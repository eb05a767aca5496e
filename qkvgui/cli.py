"""The command line: open the explorer, list the presets, or export figures without a display.

    qkvgui [SESSION]                 open the app (on a session file)
    qkvgui --preset NAME             open the app on a preset
    qkvgui presets                   list the presets
    qkvgui export SESSION --out DIR --format png,svg,pdf [--views weights,concat,...]

Exit code 0 on success; on bad input, 2 and one line on stderr (never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qkvgui.core.errors import UsageError

EXIT_OK, EXIT_USAGE = 0, 2
#: PNG pixels per screen pixel: below, a figure is a smudge; above, a 1280 × 800 window makes a 300 MB image
MIN_SCALE, MAX_SCALE = 0.25, 8.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise UsageError(message)


def _open_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="qkvgui", description="A desktop attention explorer.",
                epilog="Also: 'qkvgui presets' lists the presets; 'qkvgui export --help' exports figures.")
    p.add_argument("session", nargs="?", help="a session file (.qkv) to open")
    p.add_argument("--preset", metavar="NAME", help="open a preset instead (see 'qkvgui presets')")
    return p


def _export_parser() -> argparse.ArgumentParser:
    from qkvgui.ui.pipeline import VIEW_SPECS

    names = [s.name for s in VIEW_SPECS]
    p = _Parser(prog="qkvgui export", description="Write figures of a session's views without a display.")
    p.add_argument("session", nargs="?", help="the session file (.qkv)")
    p.add_argument("--preset", metavar="NAME", help="export a preset instead of a session file")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write into (created if missing)")
    p.add_argument("--format", default="png", metavar="FMT[,FMT]", help="png, svg and/or pdf (default: png)")
    p.add_argument("--views", default="pipeline", metavar="VIEW[,VIEW]",
                   help=f"'pipeline' (the whole figure) and/or any of: {', '.join(names)} (default: pipeline)")
    p.add_argument("--scale", type=float, default=2.0, help="PNG pixels per screen pixel (default: 2)")
    p.add_argument("--head", type=int, default=None, help="the head to show (1-based; default: the session's)")
    return p


def _load(path: str | None, preset: str | None):
    from qkvgui.core import QkvError
    from qkvgui.session import Session

    if path and preset:
        raise UsageError("give a session file or --preset, not both")
    try:
        if preset:
            return Session.from_preset(preset)
        if path:
            return Session.load(path)
    except QkvError as e:
        raise UsageError(str(e)) from None
    return None


def _split(value: str, allowed, what: str) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise UsageError(f"unknown {what} {', '.join(bad) or repr(value)}: choose from {', '.join(allowed)}")
    return items


def cmd_presets() -> int:
    from qkvgui.core.presets import make_preset, preset_names

    for name in preset_names():
        print(f"{name:16} {make_preset(name).title}")
    return EXIT_OK


def cmd_export(argv: list[str]) -> int:
    args = _export_parser().parse_args(argv)
    if not args.session and not args.preset:
        raise UsageError("export needs a session file or --preset NAME")
    from qkvgui.io.figures import FORMATS
    from qkvgui.ui.pipeline import VIEW_SPECS

    formats = _split(args.format, FORMATS, "format")
    views = _split(args.views, ["pipeline", *(s.name for s in VIEW_SPECS)], "view")
    if not MIN_SCALE <= args.scale <= MAX_SCALE:  # also refuses nan and inf
        raise UsageError(f"--scale must be between {MIN_SCALE:g} and {MAX_SCALE:g} (PNG pixels per screen pixel), "
                         f"not {args.scale:g}")
    if not args.out.strip():
        raise UsageError("--out needs the folder to write into; it was empty")
    session = _load(args.session, args.preset)
    if args.head is not None:
        if not 1 <= args.head <= session.n_heads:
            raise UsageError(f"--head {args.head}: the session has heads 1 to {session.n_heads}")
        session.set_head(args.head - 1)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {out}: {e.strerror}") from None

    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # figures need no display
    os.environ.setdefault("QKVGUI_NO_SETTINGS", "1")
    from qkvgui.ui.app import export_figures

    try:
        for path in export_figures(session, out, views, formats, args.scale):
            print(path)
    except OSError as e:
        raise UsageError(f"cannot write into {out}: {e.strerror or e}") from None
    return EXIT_OK


def cmd_open(argv: list[str]) -> int:
    args = _open_parser().parse_args(argv)
    session = _load(args.session, args.preset)
    from qkvgui.ui.app import run_app

    return run_app(session, Path(args.session) if args.session else None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] == "presets":
            if len(argv) > 1:
                raise UsageError(f"'presets' takes no arguments, got {' '.join(argv[1:])}")
            return cmd_presets()
        if argv and argv[0] == "export":
            return cmd_export(argv[1:])
        return cmd_open(argv)
    except UsageError as e:
        message = str(e).encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate prints too
        print(f"qkvgui: error: {message}", file=sys.stderr)
        return EXIT_USAGE
