"""Named physical parameters: declared ranges, sampling by split, and validation.

Each scene family declares a `ParamSpace`. A parameter has three ranges:
- `valid`: what is physically possible (anything outside is an error),
- `train`: the in-distribution range that `split=train|val` samples from,
- `ood`: the out-of-distribution range that `split=ood` samples from (disjoint from `train`
  where the parameter is continuous, so generalisation can be measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "ood")


class ParamError(ValueError):
    """Bad input: names the parameter, the value given and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One named parameter.

    kind: "float" | "int" | "choice" | "floats" (a list whose length is set by `length_from`).
    train/ood: sampling ranges (inclusive) for float and int kinds; `ood` may be a list of
    ranges (e.g. below and above the training range). For "choice", `choices` are all valid
    values, `train_choices` and `ood_choices` the ones sampled in each split.
    """

    name: str
    doc: str
    kind: str = "float"
    valid: tuple[float, float] = (-math.inf, math.inf)
    train: tuple[float, float] | None = None
    ood: tuple[float, float] | list[tuple[float, float]] | None = None
    choices: tuple[str, ...] = ()
    train_choices: tuple[str, ...] = ()
    ood_choices: tuple[str, ...] = ()
    length_from: str | None = None  # for kind="floats": the int parameter giving the length
    exclusive_low: bool = False  # valid range excludes its low end (e.g. mass > 0)

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        lo, hi = self.valid
        left = "(" if self.exclusive_low else "["
        what = "an integer" if self.kind == "int" else "a number"
        if self.kind == "floats":
            what = f"a list of numbers (one per {self.length_from}), each"
        return f"{what} in {left}{lo:g}, {hi:g}]"

    def _ranges(self, split: str) -> list[tuple[float, float]]:
        rng = self.ood if split == "ood" and self.ood is not None else self.train
        if rng is None:
            rng = self.valid
        return list(rng) if isinstance(rng, list) else [rng]

    def sample(self, rng: np.random.Generator, split: str, length: int | None = None) -> Any:
        if self.kind == "choice":
            pool = (self.ood_choices if split == "ood" else self.train_choices) or self.choices
            return str(pool[rng.integers(len(pool))])
        ranges = self._ranges(split)
        lo, hi = ranges[rng.integers(len(ranges))]
        if self.kind == "int":
            return int(rng.integers(int(lo), int(hi) + 1))
        if self.kind == "floats":
            return [float(x) for x in rng.uniform(lo, hi, size=length)]
        return float(rng.uniform(lo, hi))

    def check(self, value: Any, length: int | None = None) -> Any:
        """Return the value coerced to its kind, or raise ParamError."""
        bad = ParamError(f"parameter {self.name!r}: got {value!r}; allowed: {self.allowed()} ({self.doc})")
        if self.kind == "choice":
            if value not in self.choices:
                raise bad
            return str(value)
        if self.kind == "floats":
            if isinstance(value, (int, float)):
                value = [value] * (length or 1)
            try:
                values = [float(v) for v in value]
            except (TypeError, ValueError):
                raise bad from None
            if length is not None and len(values) != length:
                raise ParamError(
                    f"parameter {self.name!r}: got {len(values)} values {values}; "
                    f"allowed: exactly {length} (one per {self.length_from})"
                )
            for v in values:
                self._check_number(v, bad)
            return values
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if self.kind == "int":
            if number != int(number):
                raise bad
            self._check_number(number, bad)
            return int(number)
        self._check_number(number, bad)
        return number

    def _check_number(self, v: float, bad: ParamError) -> None:
        lo, hi = self.valid
        if not math.isfinite(v) or v < lo or v > hi or (self.exclusive_low and v == lo):
            raise bad


@dataclass(frozen=True)
class ParamSpace:
    """The declared parameters of one family, in dependency order."""

    params: tuple[Param, ...]
    family: str = ""
    by_name: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def resolve(self, given: dict | None, rng: np.random.Generator, split: str = "train") -> dict:
        """Validate the given values and sample every parameter not given.

        Sampling draws from `rng` for every parameter in declaration order whether or not it was
        given, so one parameter given by the user does not shift the others' random values.
        """
        check_split(split)
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.by_name))
        if unknown:
            raise ParamError(
                f"scene {self.family!r}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(self.names())}"
            )
        out: dict[str, Any] = {}
        for p in self.params:
            length = out[p.length_from] if p.length_from else None
            drawn = p.sample(rng, split, length)
            out[p.name] = p.check(given[p.name], length) if p.name in given else drawn
        return out

    def validate(self, values: dict) -> dict:
        """Check a complete parameter dict (e.g. after a counterfactual override)."""
        out = dict(values)
        for p in self.params:
            if p.name not in values:
                raise ParamError(f"scene {self.family!r}: parameter {p.name!r} is missing")
            length = out[p.length_from] if p.length_from else None
            out[p.name] = p.check(values[p.name], length)
        return out


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ParamError(f"parameter 'split': got {split!r}; allowed: one of {', '.join(SPLITS)}")
    return split
