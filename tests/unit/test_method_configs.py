"""conf/method/: `_base.yaml` holds every switch off; each method file sets only what it changes, and the keys the
trainer reads (trapo.hooks.TRAINER_METHOD_KEYS) are `_base`'s."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
METHOD_DIR = ROOT / "conf" / "method"
METHODS = sorted(p.stem for p in METHOD_DIR.glob("*.yaml") if not p.stem.startswith("_"))
BASE = OmegaConf.to_container(OmegaConf.load(METHOD_DIR / "_base.yaml"))


def test_the_trainer_reads_the_base_keys():
    from trapo.hooks import TRAINER_METHOD_KEYS

    assert TRAINER_METHOD_KEYS == set(BASE) | {"runner"}


@pytest.mark.parametrize("method", METHODS)
def test_a_method_file_starts_from_base_and_sets_only_what_it_changes(method):
    raw = OmegaConf.to_container(OmegaConf.load(METHOD_DIR / f"{method}.yaml"))
    assert raw.pop("defaults")[0] == "_base", "every method starts from _base (not from another method)"
    assert raw.pop("name") == method
    same = sorted(k for k, v in raw.items() if k in BASE and BASE[k] == v)
    assert same == [], f"conf/method/{method}.yaml repeats _base's value of {same}"


def test_base_switches_are_off():
    assert (BASE["sft_fraction"], BASE["guidance"], BASE["prefix_loss"], BASE["off_policy"]) == (0.0, "none", "none",
                                                                                                   False)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "preset").glob("*.yaml")))
def test_a_preset_moves_only_defaults_no_method_sets_itself(preset):
    """A preset is applied after the method, so a `method.*` value in it would replace a method file's own value
    silently. It may set only keys that every method leaves to `_base` (a new default for all methods, like
    preset=mini's entropy_coef 0): a method that sets one of them must be handled first."""
    raw = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "preset" / f"{preset}.yaml"))
    moved = set(raw.get("method", {}))
    assert moved <= set(BASE), f"preset {preset} sets method keys _base does not have: {sorted(moved - set(BASE))}"
    for method in METHODS:
        own = set(OmegaConf.to_container(OmegaConf.load(METHOD_DIR / f"{method}.yaml")))
        assert not moved & own, (f"preset {preset} would replace conf/method/{method}.yaml's own "
                                 f"{sorted(moved & own)}")
