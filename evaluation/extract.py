r"""Final-answer extraction from model text.

The text ends at the first end-of-turn marker (``<|im_end|>``, ``</s>``, a "User:" line): what follows is
not the model's answer. The answer is the content of the last ``\boxed{...}`` (``\fbox``/``\framebox``
too); boxes linked by a comma, "and" or "or" (with at most a short label between: ``\boxed{3} and the
product is \boxed{4}``) are read together as "3, 4", but a sentence end or a word of doubt or conclusion
("wait", "so", "answer") between them keeps only the last. A final-answer line ("The final answer is
...", "Answer: ...", "#### ...") after the last box overrides it when it holds a bare answer. Without a
box the answer is the final-answer line, the whole response when that is a bare one-line answer, or the
value that ends the last sentence after "is"/"="/... ("so the probability is 2/3."). On an answer line
the answer is its last math span, or the value after it when that span only names the unknown ("the
largest $n$ is 34"); the line ends at its first sentence end. Every scan here is linear in the text.
"""

from __future__ import annotations

import re

# Between two boxes read as one multi-part answer: joiners only, or a joiner and a short label.
_JOINERS = re.compile(r"^(?:,|;|and|or|&|\\text\{\s*(?:and|or|,)\s*\}|\\quad|\\qquad|\\,|\\;|\s|\$|\\\)|\\\(|\.)*$")
_LINK = re.compile(r"[\s$]*(?:\\\)|\\\()?\s*(?:,|;|and\b|or\b|&|\\text\{\s*(?:and|or|,)\s*\}|\\q?quad)")
_LINK_MAX = 60
_LINK_STOP = re.compile(
    r"[.!?](?:\s|$)|\n\s*\n|\b(?:wait|wrong|actually|instead|but|not?|hmm+|answer|final|so|therefore|thus|hence"
    r"|check|mistake|correct|incorrect|recheck|sorry|oops|maybe|perhaps|however|then|if)\b",
    re.IGNORECASE,
)
# What follows an end-of-turn marker is not the model's answer (a chat template's next turn).
_END_OF_TURN = re.compile(r"<\|(?:im_end|im_start|endoftext|eot_id|end)\|>|</s>|<end_of_turn>|^[ \t]*(?:Human|User|USER):", re.MULTILINE)
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
_SENTENCE_END = re.compile(r"[.!?]\s+(?=[A-Z])")
# A math span that only names the unknown ("the largest $n$ is 34"), and the value said after it.
_LONE_VAR = re.compile(r"\s*(?![ei]\b)[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*")  # not e, i: numbers
_VALUE = r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?%?"
_VALUE_AFTER = re.compile(rf"[^$\n]{{0,40}}?(?:\bis|=|\bequals|\bbe)\s*(\$[^$]+\$|{_VALUE})")
# A value ending the last sentence after a verb or "=" ("so the probability is 2/3.").
_ENDING_VALUE = re.compile(
    r"(?:\bis|\bare|\bwas|\bequals|\bbe|\bgets?|\bgives|\bobtain|\byields|\bbecomes|=|:)\s*"
    rf"(\$\$[^$]+\$\$|\$[^$]+\$|\\\(.+?\\\)|\\\[.+?\\\]|{_VALUE})\s*[.!]?\s*$"
)


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


def _linked(between: str) -> bool:
    """Whether the text between two boxes makes them one multi-part answer (see the module docstring)."""
    if _JOINERS.match(between):
        return True
    return len(between) <= _LINK_MAX and _LINK.match(between) is not None and not _LINK_STOP.search(between)


def _last_box(text: str) -> tuple[str, int] | None:
    """(content of the last box with the boxes linked to it, end of that box), or None."""
    boxes = _boxes(text)
    if not boxes:
        return None
    start, end, content = boxes[-1]
    if content is None:  # unterminated last box (a truncated answer): no answer
        return None
    parts = [content.strip()]
    for prev_start, prev_end, prev_content in reversed(boxes[:-1]):
        if prev_content is None or not _linked(text[prev_end:start]):
            break
        if prev_content.strip() != parts[0]:
            parts.insert(0, prev_content.strip())
        start = prev_start
    return ", ".join(parts), end


def last_boxed_answer(text: str) -> str | None:
    """Content of the last box (with boxes linked to it), or None."""
    found = _last_box(text)
    return None if found is None else found[0]


def _first_sentence(s: str) -> str:
    """`s` up to its first sentence end outside math ("42. Let me know if ..." -> "42")."""
    dollars = opened = last = 0
    for m in _SENTENCE_END.finditer(s):
        dollars += s.count("$", last, m.start())
        opened += s.count("\\(", last, m.start()) - s.count("\\)", last, m.start())
        last = m.start()
        if dollars % 2 == 0 and opened == 0:
            return s[: m.start()]
    return s


def _strip_math(s: str) -> str:
    s = _HOPE.sub("", s.strip()).strip()
    # Prefer the (last) math span when the line mixes words and math.
    spans = list(_SPANS.finditer(s))
    if spans:
        last = next(x for x in spans[-1].groups() if x is not None)
        value = _VALUE_AFTER.match(s, spans[-1].end()) if _LONE_VAR.fullmatch(last) else None
        s = value.group(1).strip("$") if value else last
    return s.strip().strip("*").strip().rstrip(" .").strip()


def _is_bare(ans: str) -> bool:
    """No words outside LaTeX commands: a value, not a sentence."""
    return not _WORD.search(_LATEX_CMD_OR_TEXT.sub(" ", ans))


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
        ans = _strip_math(_first_sentence(rest.split("\n", 1)[0]))
        if ans:
            return ans
    return None


def bare_answer(text: str) -> str | None:
    """The whole response when it is a one-line answer with no prose ("42", "$\\frac12$")."""
    s = text.strip()
    if not s or "\n" in s or len(s) > 200 or not _is_bare(s):
        return None
    return _strip_math(s) or None


def ending_value(text: str) -> str | None:
    """The value that ends the last line after "is", "=", ... ("so the probability is 2/3.")."""
    tail = text.rstrip().rsplit("\n", 1)[-1][-300:]
    m = _ENDING_VALUE.search(tail)
    if m is None:
        return None
    return _strip_math(m.group(1)) or None


def own_text(text: str) -> str:
    """`text` up to its first end-of-turn marker that follows some content."""
    last = 0
    for m in _END_OF_TURN.finditer(text):
        if text[last : m.start()].strip():
            return text[: m.start()]
        last = m.end()
    return text[last:]


def extract_answer(text: str | None) -> str | None:
    """The model's final answer as a string, or None when it gave none."""
    if not text:
        return None
    text = own_text(text)
    box = _last_box(text)
    if box is not None:
        ans, end = box
        later = final_line_answer(text[end:])  # "... The final answer is 5." after an intermediate box
        if later and _is_bare(later) and not _BOX_RE.search(text, end):
            return later
        return ans or None
    if _BOX_RE.search(text):  # a box that never closes: a truncated answer
        return None
    tagged = None
    for tagged in _ANSWER_TAG.finditer(text):
        pass
    if tagged is not None and tagged.group(1).strip():
        return _strip_math(tagged.group(1).strip()) or None
    return final_line_answer(text) or bare_answer(text) or ending_value(text)
