"""The command line: open the explorer, list the presets, or export figures without a display.

    qkvgui [SESSION]                 open the app (on a session file); the same as `qkvgui open [SESSION]`
    qkvgui --preset NAME             open the app on a preset
    qkvgui presets                   list the presets
    qkvgui --version                 print the version
    qkvgui export SESSION --out DIR --format png,svg,pdf [--views weights,concat,...] [--size 16x10cm]
                     [--dpi 300] [--font-size 9] [--numbers on|off] [--theme light|dark|transparent]
                     [--heads current|all|N] [--animate gif,mp4]

Exit code 0 on success; on bad input, 2 and one line on stderr (never a traceback).

One argparse parser with a subcommand per job (``open``, ``presets``, ``export``); ``open`` is the default, so
``qkvgui FILE`` keeps working. A new export option goes into ``_add_export_arguments`` and is read in
``cmd_export``; a new command is one ``sub.add_parser`` line in ``build_parser`` and one entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qkvgui.core.errors import UsageError

EXIT_OK, EXIT_USAGE = 0, 2
#: PNG pixels per figure pixel: below, a figure is a smudge; above, a 1600 × 1000 figure makes a 400 MB image
MIN_SCALE, MAX_SCALE = 0.25, 8.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: `qkvgui [--version] COMMAND ...`."""
    from qkvgui import __version__

    p = _Parser(
        prog="qkvgui",
        description="A desktop attention explorer: edit Q, K, V and O and watch every step of attention redraw live.",
        epilog="Without a command qkvgui opens the explorer: 'qkvgui [SESSION]' is 'qkvgui open [SESSION]'.",
    )
    p.add_argument("--version", action="version", version=f"qkvgui {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_open_arguments(
        sub.add_parser(
            "open",
            help="open the explorer (the default command)",
            description="Open the explorer on a session file, a preset or the default.",
        )
    )
    sub.add_parser("presets", help="list the presets", description="List the presets: name and title.")
    _add_export_arguments(
        sub.add_parser(
            "export",
            help="write figures of a session without a display",
            description="Write figures of a session's views without a display, laid out for the size asked for.",
        )
    )
    return p


def _add_open_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", nargs="?", help="a session file (.qkv) to open")
    p.add_argument("--preset", metavar="NAME", help="open a preset instead (see 'qkvgui presets')")


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    from qkvgui.io.figure_views import view_names

    p.add_argument("session", nargs="?", help="the session file (.qkv)")
    p.add_argument("--preset", metavar="NAME", help="export a preset instead of a session file")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write into (created if missing)")
    p.add_argument("--format", default="png", metavar="FMT[,FMT]", help="png, svg and/or pdf (default: png)")
    p.add_argument(
        "--views",
        default="pipeline",
        metavar="VIEW[,VIEW]",
        help=f"any of: {', '.join(view_names())} (default: pipeline)",
    )
    p.add_argument(
        "--size",
        metavar="WxH[px|cm|in]",
        help="the figure's size, e.g. 1600x1000 (pixels), 16x10cm or 6.5x4in (default: 1600x1000 px)",
    )
    p.add_argument(
        "--dpi",
        type=float,
        metavar="N",
        help="resolution: PNG pixels per inch, and how large text is on a px size (default: 96 for a px "
        "size, 300 for cm or in)",
    )
    p.add_argument("--font-size", type=float, default=10.0, metavar="PT", help="text size in points (default: 10)")
    p.add_argument("--numbers", choices=("on", "off"), default="on", help="numbers in cells where they fit")
    p.add_argument("--colorbar", choices=("on", "off"), default="on", help="a colour bar beside each view")
    p.add_argument(
        "--theme",
        choices=("light", "dark", "transparent"),
        default="light",
        help="the page: light, dark, or a transparent background (default: light)",
    )
    p.add_argument(
        "--heads",
        default="current",
        metavar="current|all|N",
        help="the selected head, every head as small multiples, or head N (1-based)",
    )
    p.add_argument(
        "--animate",
        metavar="gif|mp4[,…]",
        default="",
        help="also write the step-by-step animation (steps.gif, steps.mp4; needs the figures extra)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="PNG pixels (and DPI) per figure pixel, on top of --size and --dpi (default: 1)",
    )
    p.add_argument("--head", type=int, default=None, help="the head to show (1-based; default: the session's)")


def _figure_options(args):
    """The FigureOptions the export arguments ask for; UsageError for anything out of range."""
    import math
    from dataclasses import replace

    from qkvgui.core.errors import FigureError
    from qkvgui.io.figure_paint import FigureOptions, parse_size

    try:
        width, height, unit = parse_size(args.size) if args.size else (1600.0, 1000.0, "px")
    except FigureError as e:
        raise UsageError(f"--size: {e}") from None
    dpi = args.dpi if args.dpi is not None else (96.0 if unit == "px" else 300.0)
    if not math.isfinite(dpi):
        raise UsageError(f"--dpi must be a number of dots per inch, not {dpi}")
    heads = args.heads.strip().lower()
    if heads not in ("current", "all"):
        try:
            heads = int(heads) - 1
        except ValueError:
            raise UsageError(f"--heads takes current, all or a head number, not {args.heads!r}") from None
    options = FigureOptions(
        width, height, unit, dpi, args.font_size, args.numbers == "on", args.colorbar == "on", args.theme, heads
    )
    if args.scale != 1.0:
        options = replace(
            options,
            dpi=options.dpi * args.scale,
            **({"width": width * args.scale, "height": height * args.scale} if unit == "px" else {}),
        )
    try:
        return options.check()
    except FigureError as e:
        raise UsageError(str(e)) from None


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


def cmd_presets(args: argparse.Namespace) -> int:
    from qkvgui.core.presets import make_preset, preset_names

    names = preset_names()
    width = max(map(len, names), default=0) + 2  # titles in one column, however long a name is
    for name in names:
        print(f"{name:{width}}{make_preset(name).title}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    if not args.session and not args.preset:
        raise UsageError("export needs a session file or --preset NAME")
    from qkvgui.io.animation import ANIMATION_FORMATS
    from qkvgui.io.figure_views import view_names
    from qkvgui.io.figures import FORMATS

    formats = _split(args.format, FORMATS, "format")
    views = _split(args.views, view_names(), "view")
    animate = _split(args.animate, ANIMATION_FORMATS, "animation format") if args.animate.strip() else []
    if not MIN_SCALE <= args.scale <= MAX_SCALE:  # also refuses nan and inf
        raise UsageError(
            f"--scale must be between {MIN_SCALE:g} and {MAX_SCALE:g} (PNG pixels per figure pixel), not {args.scale:g}"
        )
    if not args.out.strip():
        raise UsageError("--out needs the folder to write into; it was empty")
    options = _figure_options(args)
    session = _load(args.session, args.preset)
    if args.head is not None:
        if not 1 <= args.head <= session.n_heads:
            raise UsageError(f"--head {args.head}: the session has heads 1 to {session.n_heads}")
        session.set_head(args.head - 1)
    if isinstance(options.heads, int) and not 0 <= options.heads < session.n_heads:
        raise UsageError(f"--heads {options.heads + 1}: the session has heads 1 to {session.n_heads}")
    if animate:
        try:
            import imageio  # noqa: F401
        except ImportError:
            raise UsageError('--animate needs imageio: python -m pip install -e ".[figures]"') from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {out}: {e.strerror}") from None

    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # figures need no display
    os.environ.setdefault("QKVGUI_NO_SETTINGS", "1")
    from qkvgui.core.errors import QkvError
    from qkvgui.io.figure_files import export_figures

    try:
        for path in export_figures(
            session, out, views, formats, options, animate, animation_size=args.size is not None
        ):
            print(path)
    except QkvError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot write into {out}: {e.strerror or e}") from None
    return EXIT_OK


def cmd_open(args: argparse.Namespace) -> int:
    session = _load(args.session, args.preset)
    from qkvgui.ui.app import run_app

    return run_app(session, Path(args.session) if args.session else None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["open", *argv]  # the default command: `qkvgui FILE`, `qkvgui --preset NAME`
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            if args.command == "presets":
                raise UsageError(f"'presets' takes no arguments, got {' '.join(extra)}")
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        return COMMANDS[args.command](args)
    except SystemExit as e:  # --help and --version print and stop
        return e.code if isinstance(e.code, int) else EXIT_OK
    except UsageError as e:
        message = str(e).encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate prints too
        print(f"qkvgui: error: {message}", file=sys.stderr)
        return EXIT_USAGE


#: every subcommand and the function that runs it
COMMANDS = {"open": cmd_open, "presets": cmd_presets, "export": cmd_export}
