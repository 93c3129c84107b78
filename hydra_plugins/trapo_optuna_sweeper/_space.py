"""Search spaces: readable YAML specs (or Hydra sweep syntax) -> Optuna suggestions -> Hydra override strings.

    method.alpha: {type: float, low: 0.01, high: 1.0, log: true}
    train.micro_batch_size: {type: int, low: 8, high: 64, log: true}
    method.guidance_schedule.preset: {type: categorical, choices: [paper, official_code]}
    method.guidance_schedule.thresholds: {type: ordered, size: 3, low: 0.3, high: 1.0, min_gap: 0.05}
    method.guidance_schedule.prefix_ratios: {type: ordered, size: 2, low: 0.05, high: 0.95, head: [0.0], tail: [1.0]}
    method.gamma: tag(log, interval(0.01, 1))        # Hydra's sweep syntax works too

`ordered` draws a strictly increasing list (TRAPO's thresholds t2 < t3 < t4 must be). Sampling the values
independently and sorting or rejecting would hand the sampler a space where most of the box is invalid, so the
list is reparametrised: Optuna sees `size` independent fractions u_i in [0, 1] (named `<key>.u0`, `.u1`, ...),
and value i takes the fraction u_i of the room the earlier values left (stick-breaking):

    free = high - low - (size - 1) * min_gap
    used_i = used_{i-1} + u_i * (free - used_{i-1})
    value_i = low + i * min_gap + used_i

Every point of the unit cube maps to a valid list and every valid list has exactly one preimage, so enqueued
lists (e.g. the paper's thresholds) map back to fractions. The resulting lists are what the job receives and
what the trial records as user attributes; `head`/`tail` are fixed values put around them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import optuna

# values are rounded so that the logged configs are readable; min_gap must keep rounded values apart
ORDERED_DIGITS = 6


class SearchSpaceError(ValueError):
    pass


@dataclass
class FloatParam:
    key: str
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def suggest(self, trial: optuna.Trial) -> float:
        return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)

    def raw(self, value: Any) -> dict[str, Any]:
        return {self.key: float(value)}


@dataclass
class IntParam:
    key: str
    low: int
    high: int
    log: bool = False
    step: int = 1

    def suggest(self, trial: optuna.Trial) -> int:
        return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step)

    def raw(self, value: Any) -> dict[str, Any]:
        return {self.key: int(value)}


@dataclass
class CategoricalParam:
    key: str
    choices: list

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_categorical(self.key, self.choices)

    def raw(self, value: Any) -> dict[str, Any]:
        return {self.key: value}


@dataclass
class OrderedParam:
    key: str
    size: int
    low: float
    high: float
    min_gap: float = 0.01
    head: tuple = ()
    tail: tuple = ()

    def __post_init__(self) -> None:
        where = f"search space {self.key!r} (ordered)"
        if self.size < 1:
            raise SearchSpaceError(f"{where}: size must be >= 1, got {self.size}")
        if self.min_gap < 10.0 ** -(ORDERED_DIGITS - 1):
            raise SearchSpaceError(f"{where}: min_gap must be >= 1e-{ORDERED_DIGITS - 1} so the values stay "
                                   f"strictly increasing after rounding, got {self.min_gap}")
        if self.free < 0:
            raise SearchSpaceError(f"{where}: {self.size} values {self.min_gap} apart do not fit in "
                                   f"[{self.low}, {self.high}]")
        if self.head and not self.head[-1] < self.low:
            raise SearchSpaceError(f"{where}: head {list(self.head)} must end below low={self.low}")
        if self.tail and not self.high < self.tail[0]:
            raise SearchSpaceError(f"{where}: tail {list(self.tail)} must start above high={self.high}")

    @property
    def free(self) -> float:
        return self.high - self.low - (self.size - 1) * self.min_gap

    def names(self) -> list[str]:
        return [f"{self.key}.u{i}" for i in range(self.size)]

    def from_fractions(self, us: Sequence[float]) -> list[float]:
        used, out = 0.0, []
        for i, u in enumerate(us):
            used += float(u) * (self.free - used)
            out.append(round(self.low + i * self.min_gap + used, ORDERED_DIGITS))
        return [float(h) for h in self.head] + out + [float(t) for t in self.tail]

    def to_fractions(self, values: Sequence[float]) -> list[float]:
        vals = [float(v) for v in values]
        h, t = len(self.head), len(self.tail)
        if len(vals) == h + self.size + t:  # the full list, as it appears in the config
            if vals[:h] != [float(x) for x in self.head] or vals[len(vals) - t:] != [float(x) for x in self.tail]:
                raise SearchSpaceError(f"{self.key}: {values} does not have head {list(self.head)} and "
                                       f"tail {list(self.tail)}")
            vals = vals[h:len(vals) - t]
        if len(vals) != self.size:
            raise SearchSpaceError(f"{self.key}: expected {self.size} values (or {h + self.size + t} with head "
                                   f"and tail), got {values}")
        used_prev, us = 0.0, []
        for i, v in enumerate(vals):
            used = v - self.low - i * self.min_gap
            room = self.free - used_prev
            if used < used_prev - 1e-9 or used > self.free + 1e-9:
                raise SearchSpaceError(f"{self.key}: {values} is not in the space (values in [{self.low}, "
                                       f"{self.high}], increasing by at least {self.min_gap})")
            us.append(min(max((used - used_prev) / room, 0.0), 1.0) if room > 0 else 0.0)
            used_prev = used
        return us

    def suggest(self, trial: optuna.Trial) -> list[float]:
        us = [trial.suggest_float(n, 0.0, 1.0) for n in self.names()]
        values = self.from_fractions(us)
        trial.set_user_attr(self.key, values)  # the list the job got; the u's alone are unreadable
        return values

    def raw(self, value: Any) -> dict[str, Any]:
        return dict(zip(self.names(), self.to_fractions(value)))


Param = FloatParam | IntParam | CategoricalParam | OrderedParam

_SPEC_KEYS = {
    "float": {"low", "high", "log", "step"},
    "int": {"low", "high", "log", "step"},
    "categorical": {"choices"},
    "ordered": {"size", "low", "high", "min_gap", "head", "tail"},
}


def param_from_spec(key: str, spec: Mapping[str, Any]) -> Param:
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in _SPEC_KEYS:
        raise SearchSpaceError(f"search space {key!r}: type must be one of {sorted(_SPEC_KEYS)}, got {kind!r}")
    unknown = set(spec) - _SPEC_KEYS[kind]
    if unknown:
        raise SearchSpaceError(f"search space {key!r} ({kind}): unknown field(s) {sorted(unknown)}; "
                               f"allowed: {sorted(_SPEC_KEYS[kind])}")
    try:
        if kind == "float":
            p: Param = FloatParam(key, float(spec["low"]), float(spec["high"]), bool(spec.get("log", False)),
                                  None if spec.get("step") is None else float(spec["step"]))
        elif kind == "int":
            p = IntParam(key, int(spec["low"]), int(spec["high"]), bool(spec.get("log", False)),
                         int(spec.get("step") or 1))
        elif kind == "categorical":
            p = CategoricalParam(key, list(spec["choices"]))
        else:
            p = OrderedParam(key, int(spec["size"]), float(spec["low"]), float(spec["high"]),
                             float(spec.get("min_gap", 0.01)), tuple(spec.get("head") or ()),
                             tuple(spec.get("tail") or ()))
    except KeyError as e:
        raise SearchSpaceError(f"search space {key!r} ({kind}): missing field {e.args[0]!r}") from None
    if isinstance(p, (FloatParam, IntParam, OrderedParam)) and not p.low < p.high:
        raise SearchSpaceError(f"search space {key!r}: low must be < high, got [{p.low}, {p.high}]")
    if isinstance(p, (FloatParam, IntParam)) and p.log and p.low <= 0:
        raise SearchSpaceError(f"search space {key!r}: a log scale needs low > 0, got {p.low}")
    if isinstance(p, CategoricalParam):
        if not p.choices:
            raise SearchSpaceError(f"search space {key!r}: categorical needs at least one choice")
        bad = [c for c in p.choices if c is not None and not isinstance(c, (bool, int, float, str))]
        if bad:
            raise SearchSpaceError(f"search space {key!r}: categorical choices must be scalars, got {bad}")
    return p


def param_from_override(override: Any) -> Param:
    """A Hydra sweep override (choice / range / interval, optionally tag(log, ...)) as a search dimension."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    key, v = override.get_key_element(), override.value()
    if isinstance(v, ChoiceSweep):
        return param_from_spec(key, {"type": "categorical", "choices": list(v.list)})
    if isinstance(v, RangeSweep):
        if all(isinstance(x, int) for x in (v.start, v.stop, v.step)):
            # range() excludes its stop; suggest_int includes high
            return IntParam(key, int(v.start), int(v.stop) - int(v.step), False, int(v.step))
        return CategoricalParam(key, list(override.sweep_iterator()))
    if isinstance(v, IntervalSweep):
        return param_from_spec(key, {"type": "float", "low": v.start, "high": v.end, "log": "log" in v.tags})
    raise SearchSpaceError(f"{override.input_line}: unsupported sweep {type(v).__name__}")


# ---- Hydra override strings -----------------------------------------------------------------------------
_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_RESERVED = {"true", "false", "null", "nan", "inf"}


def format_value(v: Any) -> str:
    """A value as Hydra override grammar reads it back unchanged (floats stay floats, strings stay strings)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        if _BARE.match(v) and v.lower() not in _RESERVED:
            return v
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{format_value(x)}" for k, x in v.items()) + "}"
    raise SearchSpaceError(f"cannot write {v!r} ({type(v).__name__}) as a Hydra override")


def override(key: str, value: Any) -> str:
    return f"{key}={format_value(value)}"
