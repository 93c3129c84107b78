"""The paper's numbers (TRAPO-SPEC.md: Table 1 and the ablation chain), in percent, in one place.

Table 1 gives the five-benchmark math average for every method and the per-benchmark scores for TRAPO only;
cells the paper does not state are absent (the tables leave them empty). The paper's AMC is the 83 problems
of AMC 2022+2023 (`amc`); the widely used AMC23 set (`amc23`, 40 problems) is compared against it too.
"""

from __future__ import annotations

SOURCE = "Su et al., Trust-Region Adaptive Policy Optimization (arXiv 2512.17636, ICLR 2026)"

BENCHMARKS = ("aime24", "amc", "math500", "minerva_math", "olympiadbench")
# our benchmark name -> the paper's column
BENCHMARK_ALIASES = {"amc23": "amc"}

# Table 1: math average over the five benchmarks
TABLE1_AVG = {"base": 25.4, "sft": 50.3, "grpo": 50.4, "sft_rl": 54.3, "relift": 53.4, "luffy": 55.5, "trapo": 56.6}
# Table 1: per benchmark (only TRAPO's are stated)
TABLE1_BENCHMARKS = {
    "trapo": {"aime24": 28.3, "amc": 66.2, "math500": 89.2, "minerva_math": 41.5, "olympiadbench": 57.6},
}

# ablation chain (math average): GRPO -> + micro-groups with prefixes, no loss on them -> + plain SFT loss on the
# prefixes (collapses) -> + LUFFY's shaping on the prefixes -> + TrSFT (= TRAPO)
ABLATION_AVG = {"grpo": 50.4, "mg_prefix": 52.7, "mg_sft": 32.3, "mg_luffy": 53.6, "trapo": 56.6}

# the paper's trust region
ALPHA = 0.1


def paper_avg(method: str) -> float | None:
    return TABLE1_AVG.get(method)


def paper_benchmark(method: str, benchmark: str) -> float | None:
    return TABLE1_BENCHMARKS.get(method, {}).get(BENCHMARK_ALIASES.get(benchmark, benchmark))
