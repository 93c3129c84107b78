"""Grade a JSONL file of model responses.

    python -m evaluation.grade --input IN.jsonl --output OUT.jsonl

Each input row has ``response`` (model text, or null) and the gold answer (a string, a number or a list)
as ``answer`` or ``gold`` (the name ``experiments/evaluate.py`` writes, so its per-benchmark files grade
as they are; a row with both needs them equal); optional ``answer_type`` and ``tolerance``
(OlympiadBench) are used when present. Each output row is the input row plus ``pred`` (the extracted
answer, or null) and ``correct`` (true/false), in input order, so an output is a valid input again. A
bad row (invalid JSON, not an object, a missing or mistyped field) is reported on stderr as
``IN.jsonl:LINE: ...`` and written with ``pred`` null, ``correct`` false and an ``error``. Exit code: 0;
1 when no row could be graded (all bad, or none), or with ``--strict`` when any row was bad; 2 when the
input cannot be read. Blank lines are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from evaluation.answer import gold_to_text
from evaluation.extract import extract_answer
from evaluation.grader import DEFAULT_TIMEOUT, Grader
from evaluation.jsonl import iter_jsonl


GOLD_FIELDS = ("answer", "gold")  # grading input and experiments/evaluate.py output


def _check_row(row) -> str | None:
    if "response" not in row:
        return "field 'response': missing"
    if row["response"] is not None and not isinstance(row["response"], str):
        return f"field 'response': expected a string or null, got {type(row['response']).__name__}"
    present = [k for k in GOLD_FIELDS if k in row]
    if not present:
        return "field 'answer' (or 'gold'): missing"
    golds = []
    for key in present:
        try:
            golds.append(gold_to_text(row[key]))
        except ValueError as exc:
            return f"field '{key}': {exc}"
        if not golds[-1].strip():
            return f"field '{key}': empty"
    if len(set(golds)) > 1:
        return "fields 'answer' and 'gold': differ"
    return None


def _gold(row: dict):
    return row[next(k for k in GOLD_FIELDS if k in row)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.grade", description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="JSONL with 'response' and 'answer' (or 'gold') per row")
    ap.add_argument("--output", required=True, help="JSONL to write (input rows + 'pred', 'correct')")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per item (default %(default)s)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any row is bad")
    ap.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = ap.parse_args(argv)
    start = time.monotonic()

    grader = Grader(workers=args.workers, timeout=args.timeout, progress=not args.quiet)
    try:
        if grader.workers:
            grader._get_pool().start()  # workers import sympy while the file is read
    except Exception:
        pass

    rows, errors = [], []
    try:
        for lineno, row, err in iter_jsonl(args.input):
            err = f"row: {err}" if err else _check_row(row)
            if err:
                errors.append(f"{args.input}:{lineno}: {err}")
            rows.append((lineno, row, err))
    except OSError as exc:
        print(f"{args.input}: cannot read: {exc.strerror}", file=sys.stderr)
        grader.close()
        return 2

    good = [(i, row) for i, (_, row, err) in enumerate(rows) if err is None]
    preds = [extract_answer(row["response"]) if isinstance(row["response"], str) else None for _, row in good]
    verdicts = grader.grade(
        [_gold(row) for _, row in good],
        preds,
        tolerances=[row.get("tolerance") for _, row in good],
        answer_types=[row.get("answer_type") if isinstance(row.get("answer_type"), str) else None for _, row in good],
    )
    stats = dict(grader.stats)
    grader.close()
    out_of = {i: (p, v) for (i, _), p, v in zip(good, preds, verdicts)}

    with open(args.output, "w", encoding="utf-8") as out:
        for i, (lineno, row, err) in enumerate(rows):
            rec = dict(row) if isinstance(row, dict) else {}
            if err is None:
                rec["pred"], rec["correct"] = out_of[i][0], bool(out_of[i][1])
            else:
                rec.update(pred=None, correct=False, error=err)
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")

    for e in errors:
        print(e, file=sys.stderr)
    if not good:
        print(f"{args.input}: no row could be graded ({len(rows)} rows, all bad)", file=sys.stderr)
    if not args.quiet:
        n_ok = sum(bool(v) for v in verdicts)
        acc = f"{n_ok / len(good):.1%}" if good else "-"
        print(
            f"{len(rows)} rows: {len(good)} graded, {len(errors)} bad (written with correct=false); "
            f"{n_ok} of {len(good)} graded correct ({acc}); "
            f"{stats['timeouts']} timeouts, {stats['crashes']} crashed workers; {time.monotonic() - start:.2f} s",
            file=sys.stderr,
        )
    return 1 if not good or (errors and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
