"""Benchmark registry: local loading, field maps, aliases, clear errors for malformed rows."""

from __future__ import annotations

import json

import pytest

from evaluation import benchmarks as bm
from evaluation.benchmarks import BenchmarkError, Item, load_benchmark, reference_response

DATA = bm.default_data_dir()
needs_data = pytest.mark.skipif(
    DATA is None or not (DATA / "math500.jsonl").exists(), reason="benchmark files not found (set TRAPO_DATA_DIR)"
)


@needs_data
@pytest.mark.parametrize("name,rows", [("aime24", 30), ("amc23", 40), ("math500", 500), ("minerva_math", 272), ("olympiadbench", 675)])
def test_the_five_load_with_their_sizes(name, rows):
    items = load_benchmark(name)
    assert len(items) == rows == bm.REGISTRY[name].expected_rows
    assert all(isinstance(it, Item) and it.question.strip() and it.gold.strip() for it in items)
    assert len({it.id for it in items}) == rows


@needs_data
def test_field_maps():
    aime = load_benchmark("aime24")
    assert aime[7].gold == "025"  # leading zeros kept: the grader reads 025 as 25
    amc = load_benchmark("amc23")
    assert amc[0].gold == "27" and amc[0].solution is None  # 27.0 in the file
    minerva = load_benchmark("minerva_math", limit=2)
    assert [m.gold for m in minerva] == ["1.6", "4.5e33"]  # only inside \boxed{} of the solution
    oly = {it.id: it for it in load_benchmark("olympiadbench")}
    assert oly["1606"].gold == "2" and oly["1606"].answer_type == "Numerical"
    assert any(it.tolerance == 0.1 for it in oly.values())  # the row with error 1e-1
    assert any(it.answer_type == "Interval" for it in oly.values())
    math = load_benchmark("math500", limit=1)[0]
    assert math.gold == "\\left( 3, \\frac{\\pi}{2} \\right)" and math.meta["subject"] == "Precalculus"


@needs_data
def test_aliases_and_limit():
    assert bm.resolve_name("AIME") == "aime24"
    assert bm.resolve_name("amc23") == "amc23" and bm.resolve_name("amc22_23") == "amc"
    assert bm.REGISTRY["amc"].expected_rows == 83 and bm.REGISTRY["amc23"].expected_rows == 40
    assert len(load_benchmark("MATH-500", limit=7)) == 7
    assert bm.benchmark_names(None) == list(bm.DEFAULT_BENCHMARKS)
    assert bm.benchmark_names("math,minerva") == ["math500", "minerva_math"]
    with pytest.raises(KeyError, match="unknown benchmark"):
        bm.resolve_name("gsm8k")


def test_data_dir_precedence(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "amc23.jsonl").write_text(json.dumps({"question": "Qa", "answer": 1.0}) + "\n")
    (b / "amc23.jsonl").write_text(json.dumps({"question": "Qb", "answer": 2.0}) + "\n")
    monkeypatch.setenv("TRAPO_DATA_DIR", str(a))
    assert load_benchmark("amc23")[0].question == "Qa"
    assert load_benchmark("amc23", data_dir=b)[0].gold == "2"


def test_paper_amc_needs_its_own_file_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="amc.jsonl"):
        load_benchmark("amc", data_dir=tmp_path)
    (tmp_path / "amc.jsonl").write_text("".join(json.dumps({"id": i, "problem": f"Q{i}", "answer": float(i)}) + "\n" for i in range(83)))
    assert len(load_benchmark("amc", data_dir=tmp_path)) == 83


@pytest.mark.parametrize(
    "name,line,message",
    [
        ("math500", '{"problem": "Q", "solution": "s"}', "field 'answer': missing"),
        ("math500", '{"problem": "", "answer": "1"}', "field 'problem': empty"),
        ("math500", '{"problem": 3, "answer": "1"}', "field 'problem': expected a string"),
        ("amc23", '{"question": "Q", "answer": null}', "field 'answer': missing"),
        ("amc23", '{"question": "Q", "answer": true}', "field 'answer'"),
        ("minerva_math", '{"problem": "Q", "solution": "no box here"}', "field 'solution': has no \\\\boxed"),
        ("olympiadbench", '{"question": "Q", "final_answer": "5"}', "field 'final_answer': expected a non-empty list"),
        ("olympiadbench", '{"question": "Q", "final_answer": ["5"], "error": "abc"}', "field 'error': not a number"),
        ("aime24", '{"problem": "Q", "answer": "1"', "row: invalid JSON"),
        ("aime24", "[1, 2]", "row: expected a JSON object"),
    ],
)
def test_malformed_rows_name_file_line_field(tmp_path, name, line, message):
    spec = bm.REGISTRY[name]
    good = {"math500": '{"problem": "Q", "answer": "1"}', "amc23": '{"question": "Q", "answer": 1.0}',
            "minerva_math": '{"problem": "Q", "solution": "\\\\boxed{1}"}',
            "olympiadbench": '{"question": "Q", "final_answer": ["1"]}', "aime24": '{"problem": "Q", "answer": "1"}'}[name]
    path = tmp_path / spec.file
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(BenchmarkError, match=f"{path.name}:3: {message}"):
        load_benchmark(name, data_dir=tmp_path)


def test_reference_response():
    assert reference_response(Item("1", "q", "7", "so \\boxed{7}.")) == "so \\boxed{7}."
    assert reference_response(Item("1", "q", "7", "It is seven.")).endswith("$\\boxed{7}$.")
    assert reference_response(Item("1", "q", "7")) == "\\boxed{7}"
