"""session.json for people: one field per line, each list on one line (tokens read as a sentence, shapes as 4 × 12)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["pretty_json"]


def pretty_json(doc: dict[str, Any], ensure_ascii: bool) -> str:
    """JSON with one field per line and each list on one line (tokens read as a sentence, shapes as 4 × 12)."""
    lines = []
    for i, (key, value) in enumerate(doc.items()):
        if isinstance(value, dict) and value and key != "extra":
            inner = ",\n".join(f"    {json.dumps(k)}: {_compact(v, ensure_ascii)}" for k, v in value.items())
            text = "{\n" + inner + "\n  }"
        elif key == "layers" and value:  # one layer per line
            text = "[\n" + ",\n".join(f"    {_compact(v, ensure_ascii)}" for v in value) + "\n  ]"
        else:
            text = _compact(value, ensure_ascii)
        lines.append(f"  {json.dumps(key)}: {text}" + ("," if i < len(doc) - 1 else ""))
    return "{\n" + "\n".join(lines) + "\n}\n"


def _compact(value: Any, ensure_ascii: bool) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=False, separators=(", ", ": "))
