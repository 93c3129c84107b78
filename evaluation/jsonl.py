"""One JSON-lines reader for every data file (training sets, benchmarks, grading input).

It only splits a file into rows and says what is wrong with a line; each caller decides whether a bad line
stops the run (training data, benchmarks) or is reported beside the others (the grading CLI).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, NamedTuple


class Line(NamedTuple):
    lineno: int           # 1-based, as editors show it
    row: dict | None      # the parsed object, None when `error` is set
    error: str | None     # "invalid JSON (...)", "not valid UTF-8 (...)", "expected a JSON object, got list"


def iter_jsonl(path: str | Path) -> Iterator[Line]:
    """The non-blank lines of `path`, parsed. A UTF-8 byte-order mark on the first line is tolerated."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield Line(lineno, None, f"not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            text = text.rstrip("\r\n")  # else a line cut short is reported at line 2, column 1 of itself
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                yield Line(lineno, None, f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            except (ValueError, RecursionError) as e:  # a number of over 4300 digits, nesting too deep
                yield Line(lineno, None, f"invalid JSON ({type(e).__name__}: {str(e)[:80]})")
                continue
            if not isinstance(row, dict):
                yield Line(lineno, None, f"expected a JSON object, got {type(row).__name__}")
                continue
            yield Line(lineno, row, None)
