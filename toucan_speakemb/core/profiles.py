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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

from toucan_speakemb.core.errors import SpeakEmbError


@dataclass(frozen=True)
class Profile:
    name: str
    dim: int
    description: str = ""
    # (encoder name, width) in concatenation order, e.g. (("ecapa", 192), ("xvector", 512)).
    components: Tuple[Tuple[str, int], ...] = field(default_factory=tuple)
    toucan: bool = False  # True when a Toucan release is conditioned on exactly this space

    def to_json(self) -> Dict:
        d = asdict(self)
        d["components"] = [list(c) for c in self.components]
        return d

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
        ),
        Profile("toucan-v3", 192, "SpeechBrain spkrec-ecapa-voxceleb (192), Toucan v3.x", (("ecapa", 192),), True),
        Profile("toucan-native-64", 64, "Toucan's own style embedding (v2.4-v2.b)", (("toucan-style", 64),), True),
        Profile("toucan-native-128", 128, "Toucan's own style embedding (v2.3)", (("toucan-style", 128),), True),
        Profile("ge2e-256", 256, "resemblyzer GE2E d-vectors (development data, not a Toucan space)", (("ge2e", 256),)),
    )
}

DEFAULT_PROFILE = "toucan-v2.2"


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
