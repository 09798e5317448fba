"""Profiles: which embedding space a file lives in, so a mismatch is caught by name and number.

A profile travels inside every file the project writes (embedding sets, checkpoints, voice banks). The
Toucan profiles follow the conditioning of each release (see docs/toucan-conditioning.md):

- ``toucan-v2.2``: SpeechBrain ECAPA (192) ⊕ x-vector (512) = 704, ECAPA first (Toucan v2.0–v2.2).
- ``toucan-v3``: SpeechBrain ECAPA (192) only (Toucan v3.x; the model L2-normalises it itself).
- ``toucan-native-64`` / ``toucan-native-128``: Toucan's own style embedding (v2.4–v2.b / v2.3), made by a
  Toucan checkout's embedding function.
- ``ge2e-256``: resemblyzer's GE2E d-vectors, the development data of this project (not a Toucan space).
- ``synthetic-<d>``: data of known structure made by :mod:`toucan_speakemb.core.synthetic`.
- anything else is a ``custom`` profile: accepted with any dimension, but never matched to a Toucan model.

This module is the one registry of spaces: each entry carries its encoders (in concatenation order), how
``extract`` makes it (``extractor``: SpeechBrain models from :data:`SPEECHBRAIN_ENCODERS`, or a Toucan
checkout's own embedding function) and the audio preprocessing its Toucan release does (``preprocessing``).
A new profile made from known encoders is one entry in :data:`KNOWN_PROFILES`; ``extract``, its ``--profile``
choice and the audio preprocessing read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from toucan_speakemb.core.errors import SpeakEmbError


@dataclass(frozen=True)
class SpeechBrainSource:
    """Where a SpeechBrain encoder comes from: its model hub id, and the folder names accepted for it under a
    parent ``--encoder-dir`` (the hub repository's name first)."""
    hub_id: str
    dir_names: Tuple[str, ...]


SPEECHBRAIN_ENCODERS: Dict[str, SpeechBrainSource] = {
    "ecapa": SpeechBrainSource("speechbrain/spkrec-ecapa-voxceleb", ("spkrec-ecapa-voxceleb", "ecapa")),
    "xvector": SpeechBrainSource("speechbrain/spkrec-xvect-voxceleb", ("spkrec-xvect-voxceleb", "xvector", "xvect")),
}

EXTRACTORS = ("speechbrain", "toucan-native")  # how `extract` makes a profile's vectors ("" = not here)
PREPROCESSINGS = ("toucan-v2.2", "toucan-v3")   # the audio recipes of extract/audio.py


@dataclass(frozen=True)
class Profile:
    name: str
    dim: int
    description: str = ""
    # (encoder name, width) in concatenation order, e.g. (("ecapa", 192), ("xvector", 512)).
    components: Tuple[Tuple[str, int], ...] = field(default_factory=tuple)
    toucan: bool = False  # True when a Toucan release is conditioned on exactly this space
    # how `extract` makes it (not stored in files: the registry says it for every known name)
    extractor: str = field(default="", compare=False)
    preprocessing: str = field(default="", compare=False)

    def to_json(self) -> Dict:
        return {"name": self.name, "dim": self.dim, "description": self.description,
                "components": [list(c) for c in self.components], "toucan": self.toucan}

    @classmethod
    def from_json(cls, d: Dict) -> "Profile":
        try:
            return get_profile(str(d["name"]), int(d["dim"]))
        except (KeyError, TypeError, ValueError):
            raise SpeakEmbError(f"malformed profile record: {d!r}") from None

    def check_same(self, other: "Profile", what: str, other_what: str) -> None:
        """Refuse to combine files of different spaces, naming both."""
        if self.name != other.name or self.dim != other.dim:
            raise SpeakEmbError(
                f"{what} is in profile '{self.name}' ({self.dim}-dim) but {other_what} is in "
                f"'{other.name}' ({other.dim}-dim)"
            )


KNOWN_PROFILES: Dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "toucan-v2.2",
            704,
            "SpeechBrain spkrec-ecapa-voxceleb (192) + spkrec-xvect-voxceleb (512), Toucan v2.0-v2.2",
            (("ecapa", 192), ("xvector", 512)),
            True,
            extractor="speechbrain",
            preprocessing="toucan-v2.2",
        ),
        Profile("toucan-v3", 192, "SpeechBrain spkrec-ecapa-voxceleb (192), Toucan v3.x", (("ecapa", 192),), True,
                extractor="speechbrain", preprocessing="toucan-v3"),
        Profile("toucan-native-64", 64, "Toucan's own style embedding (v2.4-v2.b)", (("toucan-style", 64),), True,
                extractor="toucan-native"),
        Profile("toucan-native-128", 128, "Toucan's own style embedding (v2.3)", (("toucan-style", 128),), True,
                extractor="toucan-native"),
        Profile("ge2e-256", 256, "resemblyzer GE2E d-vectors (development data, not a Toucan space)", (("ge2e", 256),)),
    )
}

DEFAULT_PROFILE = "toucan-v2.2"
NATIVE = "toucan-native"  # `extract --profile toucan-native`: -64 or -128, as the checkout's embedding is


def extractable_profiles() -> Tuple[str, ...]:
    """The names ``extract --profile`` takes: every SpeechBrain-made profile, and toucan-native."""
    return tuple(n for n, p in KNOWN_PROFILES.items() if p.extractor == "speechbrain") + (NATIVE,)


def _check_registry() -> None:
    # a registry entry that names an encoder or recipe nobody implements fails at import, not in a user's run
    for p in KNOWN_PROFILES.values():
        ok = (p.extractor in EXTRACTORS + ("",) and p.preprocessing in PREPROCESSINGS + ("",)
              and (not p.components or sum(w for _, w in p.components) == p.dim)
              and (p.extractor != "speechbrain"
                   or (p.preprocessing and all(c in SPEECHBRAIN_ENCODERS for c, _ in p.components))))
        if not ok:
            raise ValueError(f"profile registry entry {p!r} names an unknown encoder, extractor or preprocessing")


_check_registry()


def get_profile(name: str, dim: Optional[int] = None) -> Profile:
    """Look up a profile by name; ``dim`` is checked against a known profile, or sets a custom one's."""
    if name in KNOWN_PROFILES:
        p = KNOWN_PROFILES[name]
        if dim is not None and int(dim) != p.dim:
            raise SpeakEmbError(f"profile '{name}' is {p.dim}-dim, but the data is {dim}-dim")
        return p
    if name.startswith("synthetic-"):
        try:
            d = int(name.split("-", 1)[1])
        except ValueError:
            raise SpeakEmbError(f"bad synthetic profile name '{name}' (expected synthetic-<dim>)") from None
        if dim is not None and int(dim) != d:
            raise SpeakEmbError(f"profile '{name}' is {d}-dim, but the data is {dim}-dim")
        return Profile(name, d, "synthetic data of known structure (toucan_speakemb.core.synthetic)")
    if dim is None:
        known = ", ".join(sorted(KNOWN_PROFILES))
        raise SpeakEmbError(f"unknown profile '{name}' (known: {known}); give a dimension for a custom profile")
    if not name or any(c.isspace() for c in name):
        raise SpeakEmbError(f"bad profile name {name!r}")
    return Profile(name, int(dim), "custom profile")


def check_profile_name(name: str, option: str = "--profile") -> str:
    """Refuse, before any work, a profile a user asks for that the registry does not know: a known profile,
    ``synthetic-<dim>``, or ``custom-<name>`` for a space of the user's own (a typo is never a new space)."""
    if name in KNOWN_PROFILES:
        return name
    if name.startswith("synthetic-"):
        get_profile(name)
        return name
    if name.startswith("custom-") and len(name) > len("custom-") and not any(c.isspace() for c in name):
        return name
    raise SpeakEmbError(f"{option} {name!r}: unknown profile (known: {', '.join(sorted(KNOWN_PROFILES))}, "
                        f"synthetic-<dim>, or custom-<name> for a space of your own)")


def guess_profile(dim: int) -> Profile:
    """The profile a bare array of this width most likely belongs to (used for .npz imports without one)."""
    for p in KNOWN_PROFILES.values():
        if p.dim == dim:
            return p
    return Profile(f"custom-{dim}", dim, "custom profile")
