"""What a listening test asks: its trials, drawn with a seed from the stimuli, and the listener's order.

Kinds
    ``mos``        one trial per stimulus: naturalness on the 1-5 absolute category rating scale.
    ``mushra``     one trial per item (a file name every system has): each system's rendering of it and the
                   hidden reference rated 0-100 beside an explicit real reference; needs reference recordings.
    ``ab-speaker`` pairs of stimuli, "same or different speaker?": same-voice pairs (two utterances of one
                   voice), different-voice pairs (two voices of one system) and, with reference recordings,
                   each system's voices against real speakers (truth: different; tests novelty). The
                   reference's own same/different pairs are anchors: they show whether a listener can do the task.

The order of trials differs per listener but is reproducible: the page shuffles with a small PRNG seeded by
the test's seed and the listener's name, implemented identically here (:func:`presentation_order`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.listening.stimuli import REFERENCE_SYSTEM, Stimulus

KINDS = ("mos", "mushra", "ab-speaker")
PAIR_TYPES = ("same", "different", "vs-reference")
MAX_SEED = 2**32 - 1  # the page mixes the seed into a 32-bit state; a larger one would order trials unlike Python
_MAX_POOL = 200  # stimuli per system considered for pairs: enough variety, no quadratic blow-up


def _pick(rng: np.random.Generator, items: Sequence, n: int) -> list:
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), size=n, replace=False))]


def plan_trials(kind: str, stimuli: Sequence[Stimulus], seed: int, max_per_system: int | None = None,
                pairs_per_type: int = 8) -> Tuple[List[dict], List[str]]:
    """The trials of a test (a list of JSON-able dicts) and notes on what was left out and why."""
    if kind not in KINDS:
        raise SpeakEmbError(f"unknown test kind {kind!r}; choose one of {', '.join(KINDS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise SpeakEmbError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    if max_per_system is not None and max_per_system < 1:
        raise SpeakEmbError(f"--max-per-system must be at least 1, got {max_per_system}")
    rng = np.random.default_rng(seed)
    by_system: Dict[str, List[Stimulus]] = defaultdict(list)
    for s in stimuli:
        by_system[s.system].append(s)
    systems = sorted(by_system)
    notes: List[str] = []
    if kind == "mos":
        trials = [{"stimuli": [s.id]} for name in systems for s in _pick(rng, by_system[name], max_per_system)]
    elif kind == "mushra":
        trials = _plan_mushra(by_system, rng, max_per_system, notes)
    else:
        trials = _plan_pairs(by_system, rng, pairs_per_type, notes)
    if not trials:
        raise SpeakEmbError(f"no {kind} trials could be made from these stimuli" + (f" ({notes[-1]})" if notes else ""))
    for i, t in enumerate(trials, 1):
        t["id"] = f"t{i:03d}"
    return [{"id": t.pop("id"), **t} for t in trials], notes


def _plan_mushra(by_system, rng, max_items, notes) -> List[dict]:
    refs = by_system.get(REFERENCE_SYSTEM, [])
    tested = [s for s in by_system if s != REFERENCE_SYSTEM]
    if not refs:
        raise SpeakEmbError("a mushra test needs real recordings as its reference: give --reference DIR")
    if not tested:
        raise SpeakEmbError("a mushra test needs at least one system besides the reference")
    items = {name: {s.item: s for s in by_system[name]} for name in tested}
    common = sorted(set.intersection(*(set(v) for v in items.values())))
    dropped = sorted(set.union(*(set(v) for v in items.values())) - set(common))
    if dropped:
        notes.append(f"{len(dropped)} item(s) not rendered by every system are left out of the mushra test: "
                     + ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
    if not common:
        raise SpeakEmbError("no file name is shared by every system, so no mushra trial can compare them "
                            f"(systems: {', '.join(tested)})")
    ref_by_item = {r.item: r for r in refs}
    ref_by_text = {r.text.strip().lower(): r for r in refs if r.text}
    trials, unmatched = [], []
    for k, item in enumerate(_pick(rng, common, max_items)):
        first = items[tested[0]][item]
        ref = ref_by_item.get(item) or (ref_by_text.get(first.text.strip().lower()) if first.text else None)
        if ref is None:
            ref = refs[k % len(refs)]
            unmatched.append(item)
        trials.append({"item": item, "reference": ref.id,
                       "stimuli": [items[name][item].id for name in tested] + [ref.id]})
    if unmatched:
        notes.append(f"{len(unmatched)} mushra item(s) have no reference recording of the same name or text and "
                     "get a real recording of another text: " + ", ".join(unmatched[:10]))
    return trials


def _plan_pairs(by_system, rng, per_type, notes) -> List[dict]:
    unknown = [s for ss in by_system.values() for s in ss if not s.voice]
    if unknown:
        raise SpeakEmbError(f"an ab-speaker test needs each file's voice; {len(unknown)} file(s) have none, e.g. "
                            f"{unknown[0].path} (give it in a JSON sidecar or metadata.csv as voice_id, put files "
                            "in <system>/<voice>/ folders, or name them <voice>_<utt>.wav)")
    if per_type < 1:
        raise SpeakEmbError("pairs per type must be at least 1")
    trials = []

    def add(pairs, system, pair_type, truth):
        for a, b in _pick(rng, pairs, per_type):
            if rng.random() < 0.5:
                a, b = b, a
            trials.append({"stimuli": [a.id, b.id], "system": system, "pair_type": pair_type, "truth": truth})

    refs = by_system.get(REFERENCE_SYSTEM, [])
    for name in sorted(by_system):
        pool = _pick(rng, by_system[name], _MAX_POOL)
        same = [(a, b) for a, b in itertools.combinations(pool, 2) if a.voice == b.voice]
        diff = [(a, b) for a, b in itertools.combinations(pool, 2) if a.voice != b.voice]
        if not same:
            notes.append(f"{name}: no voice has two utterances, so no same-voice pairs")
        if not diff:
            notes.append(f"{name}: only one voice, so no different-voice pairs")
        add(same, name, "same", "same")
        add(diff, name, "different", "different")
        if refs and name != REFERENCE_SYSTEM:
            ref_pool = _pick(rng, refs, _MAX_POOL)
            add([(a, b) for a in pool for b in ref_pool], name, "vs-reference", "different")
    return trials


# --- the listener's order: the same PRNG and shuffle as the page's JavaScript --------------------------------

_MASK = 0xFFFFFFFF


def fnv1a32(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x01000193) & _MASK
    return h


def listener_seed(seed: int, listener: str) -> int:
    return ((int(seed) & _MASK) ^ fnv1a32(listener)) or 0x9E3779B9


def _xorshift32(state: int):
    x = state
    while True:
        x ^= (x << 13) & _MASK
        x ^= x >> 17
        x ^= (x << 5) & _MASK
        yield x / 4294967296.0


def presentation_order(seed: int, listener: str, n: int) -> List[int]:
    """Indices of ``n`` trials in the order the page presents them to ``listener`` (Fisher-Yates)."""
    rand = _xorshift32(listener_seed(seed, listener))
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(next(rand) * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order
