"""Attributes as conditions of the generator: which values were trained, and their integer codes.

A conditional generator learns one embedding per trained value of each attribute plus a *null* token (code
0) for "no condition", which every training row gets with probability ``train.p_uncond`` (classifier-free
guidance, Ho & Salimans 2022), so one model samples both unconditionally and conditionally. Rows whose
value is unknown get a token of their own (code k + 1), not the null token: unknown values are seldom a
random subset (on GE2E the unshifted voices have no pitch direction), and training them on the null token
would tilt the unconditional model towards them.

Attributes: ``gender`` (f / m), ``accent`` (any string; matched case-insensitively), ``age`` and any label
column of the embedding set (``EmbeddingSet.labels``, e.g. a pitch-shift direction).

**Age is conditioned on bands, not on a scalar.** Bands (edges ``model.age_bands``, default 25, 35, 50, 65:
``under25``, ``25-34``, ``35-49``, ``50-64``, ``65plus``) fit classifier-free guidance exactly as the
categorical attributes do (a learned embedding per band, the unknown token for unknown ages), let the model
learn effects that are not linear in years (young, adult and old voices differ in kind), and list exactly
what was trained: a corpus whose speakers are 18-38 (VCTK) trains two or three bands, and a request for
``--age 70`` is refused by name instead of being extrapolated from a scalar the model never saw there.
A numeric request is mapped to its band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError

BUILTIN_ATTRIBUTES = ("gender", "age", "accent")
NULL = 0  # the code of "no condition"; values are 1..k, and k + 1 is "unknown" (training rows only)


def check_condition_names(names: Sequence[str], source: str) -> None:
    if len(set(names)) != len(names):
        raise SpeakEmbError(f"{source}: model.conditions names an attribute twice: {', '.join(names)}")
    for n in names:
        if not n or not all(c.isalnum() or c in "_-" for c in n):
            raise SpeakEmbError(f"{source}: model.conditions: '{n}' is not an attribute name (letters, digits, _ -)")


def age_band_names(edges: Sequence[float]) -> List[str]:
    e = [int(v) if float(v).is_integer() else float(v) for v in edges]
    names = [f"under{e[0]}"]
    names += [f"{a}-{(b - 1) if isinstance(b, int) else b}" for a, b in zip(e, e[1:])]
    return names + [f"{e[-1]}plus"]


def age_to_band(age: float, edges: Sequence[float]) -> str:
    """The band name of an age in years ("" for unknown / NaN)."""
    if age is None or math.isnan(float(age)):
        return ""
    return age_band_names(edges)[int(np.searchsorted(np.asarray(edges, dtype=np.float64), float(age), side="right"))]


def attribute_column(es, name: str, age_edges: Sequence[float]) -> Optional[List[str]]:
    """Per-row values of an attribute of an EmbeddingSet ("" = unknown), or None if the set lacks it."""
    if name == "age":
        return None if es.age is None else [age_to_band(a, age_edges) for a in es.age]
    if name in ("gender", "accent"):
        col = getattr(es, name)
        return None if col is None else [str(v).strip() for v in col]
    labels = getattr(es, "labels", None) or {}
    return None if name not in labels else [str(v).strip() for v in labels[name]]


@dataclass
class ConditionSpec:
    """The trained attributes, their values (value i has code i + 1; 0 is null) and how often each was seen."""

    attributes: List[str]
    values: Dict[str, List[str]]
    counts: Dict[str, List[int]]
    age_edges: List[float]

    @classmethod
    def fit(cls, es, attributes: Sequence[str], age_edges: Sequence[float]) -> "ConditionSpec":
        """Values present in the training rows of ``es``; an attribute the data does not carry is an error."""
        values, counts = {}, {}
        for a in attributes:
            col = attribute_column(es, a, age_edges)
            known = [v for v in (col or []) if v]
            if not known:
                have = [n for n in (*BUILTIN_ATTRIBUTES, *sorted(getattr(es, "labels", None) or {}))
                        if any(attribute_column(es, n, age_edges) or [])]
                raise SpeakEmbError(f"model.conditions names '{a}', but the training data carries no {a} "
                                    f"(it carries: {', '.join(have) or 'no attributes'})")
            uniq = sorted(set(known), key=_value_order(a, age_edges))
            if len(uniq) < 2:
                raise SpeakEmbError(f"model.conditions names '{a}', but the training data has only one {a} "
                                    f"value ('{uniq[0]}'); a condition needs at least two")
            values[a] = uniq
            counts[a] = [known.count(v) for v in uniq]
        return cls(list(attributes), values, counts, [float(e) for e in age_edges])

    def __bool__(self) -> bool:
        return bool(self.attributes)

    @property
    def cardinalities(self) -> Dict[str, int]:
        """Number of trained values per attribute (the null and unknown tokens come on top)."""
        return {a: len(self.values[a]) for a in self.attributes}

    def encode_rows(self, es) -> np.ndarray:
        """(n, k) int64 codes of the rows of ``es``: values 1..k, unknown or untrained values k + 1."""
        out = np.zeros((len(es), len(self.attributes)), dtype=np.int64)
        for j, a in enumerate(self.attributes):
            lookup = {v: i + 1 for i, v in enumerate(self.values[a])}
            col = attribute_column(es, a, self.age_edges) or [""] * len(es)
            out[:, j] = [lookup.get(v, len(lookup) + 1) for v in col]
        return out

    def encode_request(self, conditions: Optional[Mapping[str, Any]]) -> np.ndarray:
        """(k,) codes of a request such as {"gender": "f", "age": 30}; attributes not named stay null."""
        codes = np.zeros(len(self.attributes), dtype=np.int64)
        for name, value in (conditions or {}).items():
            if value is None:
                continue
            if name not in self.attributes:
                trained = ", ".join(self.attributes) if self.attributes else "none: it is unconditional"
                raise SpeakEmbError(f"this generator was not trained with {name} as a condition "
                                    f"(its conditions: {trained})")
            codes[self.attributes.index(name)] = self._code(name, value)
        return codes

    def _code(self, name: str, value: Any) -> int:
        trained = self.values[name]
        text = str(value).strip()
        if name == "age":
            try:
                text = age_to_band(float(text), self.age_edges)
            except ValueError:
                pass
        elif name == "gender":
            text = {"female": "f", "male": "m", "w": "f"}.get(text.lower(), text.lower())
        for i, v in enumerate(trained):
            if v.lower() == text.lower():
                return i + 1
        hint = f" (age {value} is band {text})" if name == "age" and text != str(value).strip() else ""
        raise SpeakEmbError(f"{name} '{value}' was not trained{hint}; trained {name} values: {', '.join(trained)}")

    def describe(self, codes: np.ndarray) -> Dict[str, str]:
        return {a: self.values[a][c - 1] for a, c in zip(self.attributes, codes) if c != NULL}

    def to_json(self) -> Dict[str, Any]:
        return {"attributes": self.attributes, "values": self.values, "counts": self.counts,
                "age_edges": self.age_edges}

    @classmethod
    def from_json(cls, d: Optional[Dict[str, Any]]) -> "ConditionSpec":
        if not d:
            return cls([], {}, {}, [])
        return cls(list(d["attributes"]), {k: list(v) for k, v in d["values"].items()},
                   {k: list(v) for k, v in d["counts"].items()}, list(d.get("age_edges") or []))


def _value_order(name: str, age_edges: Sequence[float]):
    if name == "age":
        order = {b: i for i, b in enumerate(age_band_names(age_edges))}
        return lambda v: (order.get(v, len(order)), v)
    return lambda v: v


def draw_null_mask(n: int, k: int, p_uncond: float, gen) -> np.ndarray:
    """(n, k) bool, True where a condition is dropped in training: with probability p_uncond all of a row's
    conditions (the unconditional model), else each alone with probability p_uncond (so that a request naming
    only some attributes is in the training distribution too)."""
    import torch

    u = torch.rand(n, 1 + k, generator=gen).numpy()
    return (u[:, :1] < p_uncond) | (u[:, 1:] < p_uncond)
