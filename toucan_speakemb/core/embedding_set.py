"""EmbeddingSet: embeddings with speaker / utterance ids, optional attributes and their profile.

On disk: one safetensors file. Tensors: ``embeddings`` (n, d) float32 and, when known, ``age`` (n,)
float32 with NaN for unknown. Everything else (ids, gender, accent, profile, provenance, format version)
is JSON in the file's metadata. The interchange format is a plain ``.npz`` with ``embeddings``,
``speaker_ids`` and optional ``utterance_ids``, ``gender``, ``age``, ``accent`` and ``label_<name>`` (any other
categorical attribute, e.g. ``label_pitch``; ``labels`` here), read without pickle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_bytes, check_finite, load_tensors, save_tensors
from toucan_speakemb.core.profiles import Profile, get_profile, guess_profile

KIND = "embedding-set"
FORMAT_VERSION = 1
GENDER_VALUES = ("f", "m", "")  # "" = unknown


def _normalise_gender(values: Sequence[Any], what: str) -> List[str]:
    out = []
    for v in values:
        s = str(v).strip().lower()
        if s in ("f", "female", "w", "woman"):
            out.append("f")
        elif s in ("m", "male", "man"):
            out.append("m")
        elif s in ("", "u", "unknown", "none", "nan", "?", "-1"):
            out.append("")
        else:
            raise SpeakEmbError(f"{what}: unknown gender value {v!r} (expected f, m or empty)")
    return out


def _take(values: Optional[List[str]], idx: np.ndarray) -> Optional[List[str]]:
    return None if values is None else [values[i] for i in idx]


def _take_labels(labels: Optional[Dict[str, List[str]]], idx: np.ndarray) -> Optional[Dict[str, List[str]]]:
    return None if labels is None else {k: _take(v, idx) for k, v in labels.items()}


@dataclass
class EmbeddingSet:
    embeddings: np.ndarray
    speaker_ids: List[str]
    profile: Profile
    utterance_ids: Optional[List[str]] = None
    gender: Optional[List[str]] = None
    age: Optional[np.ndarray] = None
    accent: Optional[List[str]] = None
    provenance: Dict[str, Any] = field(default_factory=dict)
    # further categorical attributes per row (name -> values, "" = unknown), e.g. {"pitch": ["up", ...]}
    labels: Optional[Dict[str, List[str]]] = None

    def __post_init__(self):
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.speaker_ids = [str(s) for s in self.speaker_ids]
        self.validate()

    # ---- invariants -------------------------------------------------------------------------------
    def validate(self, what: str = "embedding set") -> None:
        x = self.embeddings
        if x.ndim != 2:
            raise SpeakEmbError(f"{what}: embeddings must be a 2-D array (n, d), got shape {x.shape}")
        n, d = x.shape
        if n == 0:
            raise SpeakEmbError(f"{what} is empty (0 embeddings)")
        if d != self.profile.dim:
            raise SpeakEmbError(
                f"{what}: embeddings are {d}-dim but profile '{self.profile.name}' is {self.profile.dim}-dim"
            )
        check_finite(x, what)
        for name in ("speaker_ids", "utterance_ids", "gender", "accent"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise SpeakEmbError(f"{what}: {name} has {len(v)} entries for {n} embeddings")
        if self.age is not None:
            self.age = np.asarray(self.age, dtype=np.float32).reshape(-1)
            if len(self.age) != n:
                raise SpeakEmbError(f"{what}: age has {len(self.age)} entries for {n} embeddings")
        if self.gender is not None:
            self.gender = _normalise_gender(self.gender, what)
        if self.labels is not None:
            self.labels = {str(k): [str(v) for v in vals] for k, vals in self.labels.items()}
            for k, vals in self.labels.items():
                if k in ("gender", "age", "accent", "speaker_ids", "utterance_ids") or not k:
                    raise SpeakEmbError(f"{what}: '{k}' cannot be a label name (it is a built-in column)")
                if len(vals) != n:
                    raise SpeakEmbError(f"{what}: label '{k}' has {len(vals)} entries for {n} embeddings")
        if self.utterance_ids is not None:
            self.utterance_ids = [str(u) for u in self.utterance_ids]
            if len(set(self.utterance_ids)) != n:
                raise SpeakEmbError(f"{what}: utterance_ids are not unique")

    # ---- views ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def speakers(self) -> List[str]:
        """Speaker ids in order of first appearance."""
        return list(dict.fromkeys(self.speaker_ids))

    def speaker_index(self) -> np.ndarray:
        """Integer speaker index per row (order of first appearance)."""
        lookup = {s: i for i, s in enumerate(self.speakers)}
        return np.array([lookup[s] for s in self.speaker_ids], dtype=np.int64)

    def subset(self, mask_or_index) -> "EmbeddingSet":
        idx = np.arange(len(self))[mask_or_index]
        return EmbeddingSet(
            self.embeddings[idx],
            _take(self.speaker_ids, idx),
            self.profile,
            _take(self.utterance_ids, idx),
            _take(self.gender, idx),
            None if self.age is None else self.age[idx],
            _take(self.accent, idx),
            dict(self.provenance),
            _take_labels(self.labels, idx),
        )

    def speaker_means(self) -> "EmbeddingSet":
        """One row per speaker: the mean of its utterance embeddings (attributes of its first row)."""
        sidx = self.speaker_index()
        k = int(sidx.max()) + 1
        sums = np.zeros((k, self.dim), dtype=np.float64)
        np.add.at(sums, sidx, self.embeddings.astype(np.float64))
        counts = np.bincount(sidx, minlength=k)
        first = np.array([np.flatnonzero(sidx == i)[0] for i in range(k)])
        prov = dict(self.provenance)
        prov["level"] = "speaker-mean"
        return EmbeddingSet(
            (sums / counts[:, None]).astype(np.float32),
            self.speakers,
            self.profile,
            [f"{s}/mean" for s in self.speakers],
            _take(self.gender, first),
            None if self.age is None else self.age[first],
            _take(self.accent, first),
            prov,
            _take_labels(self.labels, first),
        )

    def counts_per_speaker(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for s in self.speaker_ids:
            out[s] = out.get(s, 0) + 1
        return out

    # ---- files ------------------------------------------------------------------------------------
    def save(self, path: os.PathLike | str) -> Path:
        """Write as ``.safetensors`` (default) or, for a ``.npz`` path, the interchange format."""
        path = Path(path)
        if path.suffix == ".npz":
            return self.to_npz(path)
        arrays = {"embeddings": self.embeddings}
        if self.age is not None:
            arrays["age"] = self.age.astype(np.float32)
        meta = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "profile": self.profile.to_json(),
            "speaker_ids": self.speaker_ids,
            "utterance_ids": self.utterance_ids,
            "gender": self.gender,
            "accent": self.accent,
            "provenance": self.provenance,
        }
        if self.labels:
            meta["labels"] = self.labels
        return save_tensors(path, arrays, meta)

    @classmethod
    def load(cls, path: os.PathLike | str, profile: Optional[str] = None) -> "EmbeddingSet":
        """Read an embedding set (``.safetensors``) or an interchange ``.npz``; problems raise SpeakEmbError."""
        path = Path(path)
        if path.suffix == ".npz":
            return cls.from_npz(path, profile=profile)
        arrays, meta = load_tensors(path, "embedding set")
        kind = meta.get("kind")
        if kind != KIND:
            raise SpeakEmbError(f"{path} is a toucan-speakemb '{kind}' file, not an embedding set")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise SpeakEmbError(
                f"{path} has format version {version!r}; this toucan-speakemb reads up to {FORMAT_VERSION}"
            )
        if "embeddings" not in arrays or "speaker_ids" not in meta or "profile" not in meta:
            raise SpeakEmbError(f"{path} is missing embeddings, speaker ids or its profile")
        prof = Profile.from_json(meta["profile"])
        if profile is not None and profile != prof.name:
            raise SpeakEmbError(f"{path} is in profile '{prof.name}', not '{profile}'")
        return cls(
            arrays["embeddings"],
            meta["speaker_ids"],
            prof,
            meta.get("utterance_ids"),
            meta.get("gender"),
            arrays.get("age"),
            meta.get("accent"),
            meta.get("provenance") or {},
            meta.get("labels"),
        )

    # ---- interchange .npz -------------------------------------------------------------------------
    @classmethod
    def from_npz(cls, path: os.PathLike | str, profile: Optional[str] = None) -> "EmbeddingSet":
        path = Path(path)
        if not path.exists():
            raise SpeakEmbError(f"embedding file not found: {path}")
        if path.stat().st_size == 0:
            raise SpeakEmbError(f"embedding file {path} is empty")
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # .npz files are zip archives
                raise SpeakEmbError(f"{path} is not a readable .npz file (not a zip archive)")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except ValueError as e:
            if "pickle" in str(e).lower():
                raise SpeakEmbError(f"{path} holds pickled objects, which are never read; save strings as "
                                    f"unicode arrays (numpy dtype '<U')") from None
            raise SpeakEmbError(f"{path} is not a readable .npz file ({e})") from None
        except Exception as e:
            raise SpeakEmbError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
        if "embeddings" not in data or "speaker_ids" not in data:
            raise SpeakEmbError(
                f"{path} lacks the interchange arrays 'embeddings' and 'speaker_ids' (has: {', '.join(data)})"
            )
        x = data["embeddings"]
        if x.ndim != 2:
            raise SpeakEmbError(f"{path}: 'embeddings' must be 2-D (n, d), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number):
            raise SpeakEmbError(f"{path}: 'embeddings' must be numeric, got {x.dtype}")
        prof = get_profile(profile, x.shape[1]) if profile else guess_profile(x.shape[1])
        age = data.get("age")
        if age is not None:
            try:
                age = age.astype(np.float32)
            except ValueError:
                raise SpeakEmbError(f"{path}: 'age' must be numeric (NaN for unknown)") from None
        return cls(
            x.astype(np.float32),
            data["speaker_ids"].astype(str).tolist(),
            prof,
            data["utterance_ids"].astype(str).tolist() if "utterance_ids" in data else None,
            data["gender"].astype(str).tolist() if "gender" in data else None,
            age,
            data["accent"].astype(str).tolist() if "accent" in data else None,
            {"imported_from": str(path)},
            {k[len("label_"):]: data[k].astype(str).tolist() for k in data if k.startswith("label_")} or None,
        )

    def to_npz(self, path: os.PathLike | str) -> Path:
        import io

        arrays = {"embeddings": self.embeddings, "speaker_ids": np.array(self.speaker_ids, dtype=str)}
        if self.utterance_ids is not None:
            arrays["utterance_ids"] = np.array(self.utterance_ids, dtype=str)
        if self.gender is not None:
            arrays["gender"] = np.array(self.gender, dtype=str)
        if self.age is not None:
            arrays["age"] = self.age.astype(np.float32)
        if self.accent is not None:
            arrays["accent"] = np.array(self.accent, dtype=str)
        for k, vals in (self.labels or {}).items():
            arrays[f"label_{k}"] = np.array(vals, dtype=str)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return atomic_write_bytes(path, buf.getvalue())

    def summary(self) -> str:
        return (f"{len(self)} embeddings of {len(self.speakers)} speakers, {self.dim}-dim, "
                f"profile '{self.profile.name}'")
