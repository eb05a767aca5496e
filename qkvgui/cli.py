"""The command line: `qkvgui [SESSION]` opens the explorer."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qkvgui", description="A desktop attention explorer.")
    parser.add_argument("session", nargs="?", help="a session file to open")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from qkvgui.ui.app import run_app  # Qt is imported only when a window is wanted

    return run_app(args)
