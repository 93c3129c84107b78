r"""Final-answer extraction from model text.

The answer is the content of the last ``\boxed{...}`` (``\fbox``/``\framebox`` too); boxes that end the
text separated only by a comma, "and" or "or" are read together (``\boxed{1}, \boxed{2}`` is "1, 2").
Without a box it is the final-answer line ("The final answer is ...", "Answer: ...", "#### ..."),
or the whole response when that is a bare one-line answer. Every scan here is linear in the text.
"""

from __future__ import annotations

import re

# Between two boxes read as one multi-part answer.
_JOINERS = re.compile(r"^(?:,|;|and|or|&|\\text\{\s*(?:and|or|,)\s*\}|\\quad|\\qquad|\\,|\\;|\s|\$|\\\)|\\\(|\.)*$")
# Final-answer anchors, strongest first; each takes the rest of its line.
_ANCHORS = [
    re.compile(r"final\s+answer\s*(?:is|:|=)?\s*:?", re.IGNORECASE),
    re.compile(r"(?:the\s+)?answer\s+is\s*:?", re.IGNORECASE),
    re.compile(r"\banswer\s*\**\s*[:=]\s*\**", re.IGNORECASE),
    re.compile(r"^\s*####\s*", re.MULTILINE),
]
_HOPE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
_SPANS = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]{3,}")
_TOKEN = re.compile(r"[^\s$]+")
_LATEX_CMD_OR_TEXT = re.compile(r"\\text\{[^{}]*\}|\\[A-Za-z]+")


def _brace_end(text: str, open_pos: int) -> int:
    """Index of the brace closing the one at `open_pos`, or -1."""
    depth = 0
    for j in range(open_pos, len(text)):
        c = text[j]
        if c == "{" and (j == 0 or text[j - 1] != "\\"):
            depth += 1
        elif c == "}" and (j == 0 or text[j - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return j
    return -1


_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")


def _boxes(text: str) -> list[tuple[int, int, str | None]]:
    """All box commands as (start, end, content); content None when the box never closes."""
    out = []
    pos = 0
    for m in _BOX_RE.finditer(text):
        if m.start() < pos:  # a box inside the previous box's content
            continue
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if text.startswith("[", i) and m.group(0) == "\\framebox":  # \framebox[width]{...}
            close = text.find("]", i)
            i = close + 1 if close >= 0 else i
        if i < len(text) and text[i] == "{":
            end = _brace_end(text, i)
            if end < 0:
                out.append((m.start(), len(text), None))
                return out
            out.append((m.start(), end + 1, text[i + 1 : end]))
            pos = end + 1
        elif i > m.end() and i < len(text) and m.group(0) == "\\boxed":
            tok = _TOKEN.match(text, i)  # "\boxed 5": one token up to whitespace or a math delimiter
            out.append((m.start(), tok.end(), tok.group(0).rstrip(".,")))
            pos = tok.end()
    return out


def last_boxed_answer(text: str) -> str | None:
    """Content of the last box (with boxes chained to it by a joiner), or None."""
    boxes = _boxes(text)
    if not boxes:
        return None
    start, end, content = boxes[-1]
    if content is None:  # unterminated last box (a truncated answer): no answer
        return None
    parts = [content.strip()]
    for prev_start, prev_end, prev_content in reversed(boxes[:-1]):
        between = text[prev_end:start]
        if prev_content is None or len(between) > 40 or not _JOINERS.match(between):
            break
        if prev_content.strip() != parts[0]:
            parts.insert(0, prev_content.strip())
        start = prev_start
    return ", ".join(parts)


def _strip_math(s: str) -> str:
    s = _HOPE.sub("", s.strip()).strip()
    # Prefer the (last) math span when the line mixes words and math.
    spans = _SPANS.findall(s)
    if spans:
        last = [x for x in spans[-1] if x]
        if last:
            s = last[0]
    return s.strip().strip("*").strip().rstrip(" .").strip()


def final_line_answer(text: str) -> str | None:
    """The answer on the last final-answer line ("The final answer is 5", "Answer: 5", "#### 5")."""
    for anchor in _ANCHORS:
        last = None
        for last in anchor.finditer(text):
            pass
        if last is None:
            continue
        rest = text[last.end() :].lstrip(" \t*:\n")
        for opener, closer in (("$$", "$$"), ("\\[", "\\]")):
            if rest.startswith(opener):  # a display block may span lines
                close = rest.find(closer, len(opener))
                if close > 0:
                    rest = rest[len(opener) : close].replace("\n", " ")
                break
        ans = _strip_math(rest.split("\n", 1)[0])
        if ans:
            return ans
    return None


def bare_answer(text: str) -> str | None:
    """The whole response when it is a one-line answer with no prose ("42", "$\\frac12$")."""
    s = text.strip()
    if not s or "\n" in s or len(s) > 200:
        return None
    if _WORD.search(_LATEX_CMD_OR_TEXT.sub(" ", s)):
        return None
    return _strip_math(s) or None


def extract_answer(text: str | None) -> str | None:
    """The model's final answer as a string, or None when it gave none."""
    if not text:
        return None
    ans = last_boxed_answer(text)
    if ans is not None:
        return ans or None
    if _BOX_RE.search(text):  # a box that never closes: a truncated answer
        return None
    tagged = None
    for tagged in _ANSWER_TAG.finditer(text):
        pass
    if tagged is not None and tagged.group(1).strip():
        return _strip_math(tagged.group(1).strip()) or None
    return final_line_answer(text) or bare_answer(text)
