#!/usr/bin/env python
"""OpenR1-Math-46k-8192 (LUFFY's / TRAPO's training set) as the JSON lines `data=openr1-math-46k` reads.

    python scripts/prepare_openr1.py                                  # from the hub (needs internet + `datasets`)
    python scripts/prepare_openr1.py --source train.parquet           # a local copy (parquet or jsonl)
    python scripts/prepare_openr1.py --out data/openr1-math-46k-8192.jsonl

The hub rows are verl-style: `prompt` (chat turns; the question is the last user turn), `target` (the
reference solution as assistant turns) and `reward_model.ground_truth` (the answer). Each output row is
{"question", "solution", "answer"}; the Qwen2.5-Math instruction is stripped from the question because
`evaluation.prompts.build_prompt` adds it. Rows already in that flat shape pass through.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HUB_ID = "Elliott/Openr1-Math-46k-8192"
INSTRUCTION_TAILS = ("Please reason step by step, and put your final answer within \\boxed{}.",)


def _text(turns) -> str:
    if isinstance(turns, str):
        return turns
    if isinstance(turns, dict):
        return str(turns.get("content", ""))
    turns = list(turns)
    return str(turns[-1]["content"]) if turns else ""


def convert_row(row: dict) -> dict:
    """One training row as {question, solution, answer}; raises KeyError/ValueError on an unusable row."""
    if all(k in row for k in ("question", "solution", "answer")):
        q, s, a = row["question"], row["solution"], row["answer"]
    else:
        users = [t for t in row["prompt"] if t.get("role") == "user"] if not isinstance(row["prompt"], str) else None
        q = _text(users if users else row["prompt"])
        s = _text(row["target"])
        rm = row["reward_model"]
        a = rm["ground_truth"] if isinstance(rm, dict) else rm
    q = str(q).strip()
    for tail in INSTRUCTION_TAILS:
        if q.endswith(tail):
            q = q[: -len(tail)].rstrip()
    if isinstance(a, (list, tuple)):
        a = a[0] if a else ""
    out = {"question": q, "solution": str(s).strip(), "answer": str(a).strip()}
    for k, v in out.items():
        if not v:
            raise ValueError(f"empty {k}")
    return out


def read_rows(source: str):
    path = Path(source)
    if path.suffix == ".jsonl":
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
        return
    if path.suffix == ".parquet":
        import pandas as pd

        yield from pd.read_parquet(path).to_dict(orient="records")
        return
    from datasets import load_dataset  # installed with the openrlhf extra

    yield from load_dataset(source, split="train")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=HUB_ID, help="hub id, .parquet or .jsonl (default: %(default)s)")
    ap.add_argument("--out", default="data/openr1-math-46k-8192.jsonl")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = bad = 0
    with open(out, "w") as fh:
        for i, row in enumerate(read_rows(args.source)):
            try:
                fh.write(json.dumps(convert_row(dict(row)), ensure_ascii=False) + "\n")
                n += 1
            except (KeyError, ValueError, TypeError, IndexError) as e:
                bad += 1
                print(f"row {i}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
    print(f"wrote {n} rows to {out}" + (f" ({bad} skipped)" if bad else ""))
    return 0 if n else 1


if __name__ == "__main__":
    raise SystemExit(main())
