"""Search-space specs of the trapo Optuna sweeper: parsing, the ordered reparametrisation, override strings."""

import math

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.trapo_optuna_sweeper._space import (CategoricalParam, FloatParam, IntParam, OrderedParam,
                                                        SearchSpaceError, format_value, override,
                                                        param_from_override, param_from_spec)

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT_CONF = __import__("pathlib").Path(__file__).resolve().parents[2] / "conf" / "sweep"


def test_specs_parse():
    p = param_from_spec("method.alpha", {"type": "float", "low": 0.01, "high": 1.0, "log": True})
    assert p == FloatParam("method.alpha", 0.01, 1.0, True, None)
    assert param_from_spec("k", {"type": "int", "low": 1, "high": 8}) == IntParam("k", 1, 8, False, 1)
    assert param_from_spec("g", {"type": "categorical", "choices": ["paper", "official_code"]}).choices == \
        ["paper", "official_code"]


@pytest.mark.parametrize("spec, msg", [
    ({"type": "floaty", "low": 0, "high": 1}, "type must be one of"),
    ({"type": "float", "low": 0.01}, "missing field 'high'"),
    ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "log scale needs low > 0"),
    ({"type": "float", "low": 1.0, "high": 0.5}, "low must be < high"),
    ({"type": "float", "low": 0.1, "high": 1.0, "lgo": True}, "unknown field"),
    ({"type": "ordered", "size": 3, "low": 0.8, "high": 1.0, "min_gap": 0.2}, "do not fit"),
    ({"type": "ordered", "size": 2, "low": 0.0, "high": 0.9, "head": [0.0]}, "head"),
])
def test_bad_specs_say_what_is_wrong(spec, msg):
    with pytest.raises(SearchSpaceError, match=msg):
        param_from_spec("x", spec)


def test_hydra_sweep_syntax():
    parser = OverridesParser.create()
    p = param_from_override(parser.parse_override("method.alpha=tag(log,interval(0.01,1))"))
    assert p == FloatParam("method.alpha", 0.01, 1.0, True, None)
    p = param_from_override(parser.parse_override("train.group_size=range(2,10,2)"))
    assert p == IntParam("train.group_size", 2, 8, False, 2)
    p = param_from_override(parser.parse_override("method=choice(trapo,mg_luffy)"))
    assert p == CategoricalParam("method", ["trapo", "mg_luffy"])


def test_ordered_values_are_always_valid_and_invert():
    p = OrderedParam("method.guidance_schedule.thresholds", 3, 0.2, 1.0, 0.05)
    corners = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 1], [0.5, 0.5, 0.5], [0.9, 0.1, 0.7]]
    for us in corners:
        t = p.from_fractions(us)
        assert len(t) == 3 and 0.2 <= t[0] and t[-1] <= 1.0 + 1e-9
        assert all(b - a >= 0.05 - 1e-6 for a, b in zip(t, t[1:])), t
    paper = [0.5, 0.7, 0.9]
    assert p.from_fractions(p.to_fractions(paper)) == pytest.approx(paper, abs=1e-6)
    with pytest.raises(SearchSpaceError, match="not in the space"):
        p.to_fractions([0.5, 0.52, 0.9])  # closer than min_gap


def test_ordered_head_tail_and_trial_records_the_list():
    p = OrderedParam("method.guidance_schedule.prefix_ratios", 2, 0.05, 0.95, 0.05, (0.0,), (1.0,))
    study = optuna.create_study()
    study.enqueue_trial(p.raw([0.0, 0.2, 0.5, 1.0]))  # the full list, as written in the config
    trial = study.ask()
    values = p.suggest(trial)
    assert values == pytest.approx([0.0, 0.2, 0.5, 1.0])
    assert trial.user_attrs["method.guidance_schedule.prefix_ratios"] == values
    assert set(trial.params) == {"method.guidance_schedule.prefix_ratios.u0", "method.guidance_schedule.prefix_ratios.u1"}
    for _ in range(20):  # whatever the sampler proposes is increasing, starts at 0 and ends at 1
        v = p.suggest(study.ask())
        assert v[0] == 0.0 and v[-1] == 1.0 and all(a < b for a, b in zip(v, v[1:]))


@pytest.mark.parametrize("value", [0.1, 1e-05, 3, True, None, "paper", "a b'c", "1.5", "null",
                                   [0.5, 0.7, 0.9], {"x": 1}])
def test_override_strings_round_trip(value):
    parsed = OverridesParser.create().parse_override(override("k", value)).value()
    assert parsed == value and type(parsed) is type(value)


def test_nan_is_written_as_nan():
    assert math.isnan(OverridesParser.create().parse_override("k=" + format_value(float("nan"))).value())


@pytest.mark.parametrize("name", ["trust_region", "thresholds", "joint"])
def test_shipped_sweep_configs_parse_and_enqueue(name):
    """Every conf/sweep file's search space is valid and its enqueued baseline lies inside it."""
    conf = OmegaConf.load(ROOT_CONF / f"{name}.yaml").hydra.sweeper
    params = OmegaConf.to_container(conf.params)
    space = {k: param_from_spec(k, v) for k, v in params.items()}
    assert space
    for entry in OmegaConf.to_container(conf.enqueue):
        for k, v in entry.items():
            assert space[k].raw(v)
