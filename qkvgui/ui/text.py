"""Text from files, shown safely: capped in length and breakable, so a 15 MiB one-word description cannot stall
the window (Qt lays out an unbreakable word in time quadratic in its length: 300 KB took 30 s).

    display_text(description)   for paragraphs: at most MAX_DISPLAY_CHARS, a break opportunity every 80 characters
    short_label(token)          for headers, ticks and list items: one line, at most MAX_LABEL_CHARS
    one_line(message)           for the status bar: the first line, capped
    format_tokens / parse_tokens  a token field's text and back, exactly (quoted tokens may hold spaces)
    dead_rows_text(rows, tokens)  numbers for people in the status bar
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

__all__ = [
    "MAX_DISPLAY_CHARS",
    "MAX_LABEL_CHARS",
    "MAX_TOKENS_TEXT",
    "dead_rows_text",
    "display_text",
    "format_tokens",
    "one_line",
    "parse_tokens",
    "short_label",
]

#: the longest text shown as a paragraph (a description); the rest is summarised
MAX_DISPLAY_CHARS = 4000
#: the longest label (a token in a header or on an axis)
MAX_LABEL_CHARS = 48
#: the longest status-bar message
MAX_MESSAGE_CHARS = 400
_ZERO_WIDTH_SPACE = "\u200b"
_LONG_WORD = re.compile(r"\S{80}")  # linear: a fixed-length run, no nested repetition
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(text: str) -> str:
    """Lone surrogates (valid in Python strings, not in Qt's UTF-16) become U+FFFD; control characters go."""
    return _CONTROL.sub("", text.encode("utf-8", "replace").decode("utf-8"))


def _more(n: int) -> str:
    return f"… ({n:,} more characters)"


def display_text(text: str, limit: int = MAX_DISPLAY_CHARS) -> str:
    """``text`` capped at ``limit`` characters (saying how many more there are), with a zero-width break after
    every 80 characters without a space, so that word wrap can always break it."""
    text = str(text)
    extra = len(text) - limit
    shown = _printable(text[:limit] if extra > 0 else text)
    shown = _LONG_WORD.sub(lambda m: m.group(0) + _ZERO_WIDTH_SPACE, shown)
    return shown + (_more(extra) if extra > 0 else "")


def short_label(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """One line of at most ``limit`` characters (an ellipsis marks a cut): for headers, ticks and list items."""
    text = str(text)
    if len(text) <= limit and text.isprintable():  # the common case, at C speed (headers ask for every section)
        return text
    head = text[: limit + 1]
    if "\n" in head or "\r" in head:
        head = head.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    head = _printable(head)
    return head if len(text) <= limit else head[: limit - 1] + "…"


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The first line of a message, capped: what fits a status bar."""
    message = str(message)
    first = message[: limit + 1].split("\n", 1)[0]
    first = _printable(first)
    return first if len(first) <= limit and len(message) <= limit else first[: limit - 1] + "…"


# ---- the token fields: tokens as one line of text, and back, exactly ---------------------------------------------
#: the longest text a token field holds (about 0.5 s of layout); longer token lists are shown read-only
MAX_TOKENS_TEXT = 1_000_000
_DECODER = json.JSONDecoder()


_SURROGATE = re.compile(r"[\ud800-\udfff]")
_QUOTE = re.compile(r'^$|^"|\s|[\ud800-\udfff]')


def format_tokens(tokens: Sequence[str]) -> str:
    """Tokens as the text of a token field: separated by spaces; a token that holds a space (``new york``), is
    empty, starts with a quote or holds a character that is not text is written as a JSON string
    (``"new york"``), so that ``parse_tokens`` gives every token back exactly."""
    return " ".join(_quoted(t) if _QUOTE.search(t) else t for t in tokens)


def _quoted(token: str) -> str:
    return json.dumps(token, ensure_ascii=bool(_SURROGATE.search(token)))  # a lone surrogate as \udXXX


def parse_tokens(text: str) -> list[str]:
    """The tokens in a token field's text: runs of non-space characters, or JSON strings in double quotes (which
    may hold spaces). Raises ValueError saying where a quoted token is not closed. Linear in the text's length."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == '"':
            try:
                token, end = _DECODER.raw_decode(text, i)
            except ValueError:
                raise ValueError(f'the quoted token at character {i + 1} is not closed (end it with ")') from None
            if end < n and not text[end].isspace():
                raise ValueError(f"put a space after the quoted token that ends at character {end}")
            tokens.append(token)
            i = end
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        tokens.append(text[i:j])
        i = j
    return tokens


def dead_rows_text(rows: Sequence[int], tokens: Sequence[str], shown: int = 6) -> str:
    """ "query rows 1 ('the') and 3 ('cat') see no key and take nothing": numbers for people (counted from 1, as
    the window counts tokens), never np.int64(0)."""
    rows = [int(r) for r in rows]
    if not rows:
        return ""

    def one(i: int) -> str:
        return f"{i + 1} ({short_label(tokens[i], 16)!r})" if 0 <= i < len(tokens) else str(i + 1)

    named = [one(i) for i in rows[:shown]]
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + (", " if more else " and ") + named[-1]
    noun = "query row" if len(rows) == 1 else "query rows"
    verb = "sees" if len(rows) == 1 else "see"
    return f"{noun} {listed}{more} {verb} no key and take{'s' if len(rows) == 1 else ''} nothing"
