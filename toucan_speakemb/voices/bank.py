"""VoiceBank: sampled voices with their ids, seeds, embeddings and provenance.

On disk: safetensors with ``embeddings`` (n, d) float32 and ``seeds`` (n,) int64; JSON metadata holds the
ids, the profile, and where the voices came from (generator path and fingerprint, sampler, steps, time,
version). A voice id is ``<generator fingerprint[:8]>-<seed>``: with the generator it re-makes the voice.
Voices sampled with conditions or sliders get ``<fingerprint[:8]>-<seed>-<variant>``, the variant a short hash
of the settings the provenance records (conditions, guidance, sliders, slider strength), so an id never
names two different vectors.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from toucan_speakemb.core.version import __version__
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_bytes, check_finite, load_tensors, save_tensors, utc_timestamp
from toucan_speakemb.core.embedding_set import EmbeddingSet
from toucan_speakemb.core.profiles import Profile
from toucan_speakemb.diffusion.samplers import get_sampler
from toucan_speakemb.generate.request import SamplingRequest, variant_tag
from toucan_speakemb.evaluation.report import GeneratedSet

KIND = "voice-bank"
FORMAT_VERSION = 1


def voice_id(fingerprint: str, seed: int, variant: str = "") -> str:
    return f"{fingerprint[:8]}-{int(seed)}" + (f"-{variant}" if variant else "")


# A bank's ids live in its file's JSON header, which safetensors reads up to 100 MB: at ~40 bytes an id, a
# bank holds at most this many voices (sample several banks, with other seeds, for more).
MAX_BANK_VOICES = 1_000_000
# Memory a streamed sample holds per voice besides the chunk being sampled: its id (a Python string, and
# twice in the JSON header), its seed.
_BYTES_PER_VOICE = 240
SAMPLE_CHUNK = 4096  # voices sampled and written per step of `sample`


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_sample_request(n: int, dim: int, out: Union[str, Path], npy: Optional[Union[str, Path]] = None) -> None:
    """Refuse, before any sampling, a count above :data:`MAX_BANK_VOICES`, or one whose ids and chunk do not
    fit the available memory or whose files do not fit the free disk space."""
    import shutil

    if not 1 <= n <= MAX_BANK_VOICES:
        raise SpeakEmbError(f"-n {n}: a voice bank holds 1 to {MAX_BANK_VOICES:,} voices (their ids live in the "
                            f"file's header); sample several banks with different --seed for more")
    need = n * _BYTES_PER_VOICE + min(n, SAMPLE_CHUNK) * dim * 4 * 8
    avail = available_memory()
    if avail is not None and need > avail:
        raise SpeakEmbError(f"-n {n} needs about {need / 2**20:.0f} MB of memory; {avail / 2**20:.0f} MB "
                            f"are available")
    for path, size in ((out, n * (dim * 4 + 8 + 45)), (npy, n * dim * 4)):
        if path is None:
            continue
        free = shutil.disk_usage(Path(path).resolve().parent).free
        if size > free:
            raise SpeakEmbError(f"-n {n}: {path} would take about {size / 2**20:.0f} MB; the disk has "
                                f"{free / 2**20:.0f} MB free")


class SamplingPlan:
    """What sampling n voices from a bank seed will make, known before any sampling: the voices' seeds, ids
    and provenance; :meth:`sample` makes the voices of any run of those seeds (bad conditions and slider
    settings are refused when the plan is made)."""

    def __init__(self, generator, n: int, seed: int, request: Optional[SamplingRequest] = None):
        from toucan_speakemb.generate.generator import voice_seeds

        self.generator = generator
        self.request = request = request or SamplingRequest()
        settings = request.check(generator)  # every setting is refused here, before any file is opened
        self.seeds = voice_seeds(seed, n)
        sc = generator.cfg.sample
        variant = variant_tag(settings)
        used = sc.sampler if request.sampler is None else request.sampler
        steps = sc.steps if request.steps is None else request.steps
        self.provenance = {
            "generator": generator.describe(),
            "bank_seed": int(seed),
            "sampler": used,
            "temperature": generator.check_temperature(request.temperature),
            "autoguidance": float(sc.autoguidance),
            "steps": get_sampler(used).steps_used(generator.diffusion, steps),
            "device": str(generator.device),  # voices of one seed agree across devices up to float rounding
            "created": utc_timestamp(),
            "toucan_speakemb_version": __version__,
        }
        if settings:
            self.provenance.update(settings, variant=variant)
        self.ids = [voice_id(generator.fingerprint, s, variant) for s in self.seeds]

    def sample(self, seeds) -> np.ndarray:
        return self.generator.sample_seeds(seeds, self.request)

    def write(self, out: Union[str, Path], npy: Optional[Union[str, Path]] = None, chunk: int = SAMPLE_CHUNK,
              progress: bool = True) -> int:
        """Sample the voices chunk by chunk straight into the bank file ``out`` (and the bare array ``npy``):
        memory holds the ids and one chunk, never the whole bank. Both files appear complete or not at all."""
        from contextlib import ExitStack

        from tqdm import tqdm

        from toucan_speakemb.core.fileio import StreamedNpy, StreamedTensors

        n, dim = len(self.seeds), self.generator.dim
        meta = {"kind": KIND, "format_version": FORMAT_VERSION, "profile": self.generator.profile.to_json(),
                "ids": self.ids, "provenance": self.provenance}
        with ExitStack() as stack:
            files = [stack.enter_context(StreamedTensors(out, {"seeds": self.seeds}, "embeddings", (n, dim),
                                                         np.float32, meta))]
            if npy is not None:
                files.append(stack.enter_context(StreamedNpy(npy, (n, dim), np.float32)))
            bar = stack.enter_context(tqdm(total=n, unit="voice", desc="sampling", dynamic_ncols=True,
                                           disable=not progress or n <= chunk))
            for start in range(0, n, chunk):
                x = np.asarray(self.sample(self.seeds[start:start + chunk]), dtype=np.float32)
                check_finite(x, "sampled voices")
                for f in files:
                    f.rows(x)
                bar.update(len(x))
        return n


@dataclass
class VoiceBank:
    embeddings: np.ndarray
    seeds: np.ndarray
    ids: List[str]
    profile: Profile
    provenance: Dict[str, Any] = field(default_factory=dict)
    # cosine of each voice to its nearest training speaker, when the bank was sampled with novelty checks
    nearest_training_cosine: Optional[np.ndarray] = None

    def __post_init__(self):
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.seeds = np.asarray(self.seeds, dtype=np.int64)
        n = len(self.embeddings)
        if self.embeddings.ndim != 2 or self.embeddings.shape[1] != self.profile.dim:
            raise SpeakEmbError(f"voice bank: embeddings of shape {self.embeddings.shape} do not fit profile "
                                f"'{self.profile.name}' ({self.profile.dim}-dim)")
        if len(self.seeds) != n or len(self.ids) != n:
            raise SpeakEmbError(f"voice bank: {n} embeddings but {len(self.seeds)} seeds and {len(self.ids)} ids")
        if len(set(self.ids)) != n:
            raise SpeakEmbError("voice bank: voice ids are not unique")
        check_finite(self.embeddings, "voice bank")
        if self.nearest_training_cosine is not None:
            self.nearest_training_cosine = np.asarray(self.nearest_training_cosine, dtype=np.float32)
            if self.nearest_training_cosine.shape != (n,):
                raise SpeakEmbError(f"voice bank: {n} voices but {self.nearest_training_cosine.shape} novelty figures")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_generator(cls, generator, n: int, seed: int, request: Optional[SamplingRequest] = None,
                       **settings) -> "VoiceBank":
        """n voices from a bank seed, sampled as ``request`` asks (or its fields as keywords, e.g.
        ``conditions={"gender": "f"}``, ``guidance``, ``sliders={"pc1": 2}``, ``temperature``), as in
        :meth:`Generator.sample`."""
        if request is not None and settings:
            raise TypeError("give a SamplingRequest or its fields as keywords, not both")
        plan = SamplingPlan(generator, n, seed, request or SamplingRequest.of(**settings))
        return cls(plan.sample(plan.seeds), plan.seeds, plan.ids, generator.profile, plan.provenance)

    @classmethod
    def empty(cls, profile: Profile, provenance: Optional[Dict[str, Any]] = None) -> "VoiceBank":
        return cls(np.zeros((0, profile.dim), np.float32), np.zeros(0, np.int64), [], profile, provenance or {},
                   np.zeros(0, np.float32))

    def index(self, vid: str) -> int:
        try:
            return self.ids.index(vid)
        except ValueError:
            raise SpeakEmbError(f"voice {vid} is not in the bank ({len(self)} voices)") from None

    def added(self, voices, record: Dict[str, Any]) -> "VoiceBank":
        """A new bank with ``voices`` (novelty.Voice) appended; ``record`` is kept in provenance['additions']."""
        if not voices:
            return self
        novelty = self.nearest_training_cosine if self.nearest_training_cosine is not None else np.full(len(self), np.nan)
        prov = dict(self.provenance)
        prov["additions"] = list(prov.get("additions", [])) + [record]
        return VoiceBank(np.concatenate([self.embeddings, np.stack([v.embedding for v in voices])]),
                         np.concatenate([self.seeds, [v.seed for v in voices]]), self.ids + [v.id for v in voices],
                         self.profile, prov,
                         np.concatenate([novelty, [v.nearest_training_cosine for v in voices]]))

    def without(self, ids) -> "VoiceBank":
        drop = {self.index(v) for v in ids}
        keep = np.array([i for i in range(len(self)) if i not in drop], dtype=np.int64)
        novelty = None if self.nearest_training_cosine is None else self.nearest_training_cosine[keep]
        return VoiceBank(self.embeddings[keep], self.seeds[keep], [self.ids[i] for i in keep], self.profile,
                         self.provenance, novelty)

    def check_generator(self, generator, path: Union[str, Path]) -> None:
        """A bank (read from ``path``) holds the voices of one generator: refuse ``generator`` when its profile
        differs or the bank holds voices of another generator (voice ids start with the generator's fingerprint)."""
        generator.profile.check_same(self.profile, f"generator {generator.path}", f"voice bank {path}")
        fps = {i.split("-", 1)[0] for i in self.ids}
        if fps and fps != {generator.fingerprint[:8]}:
            raise SpeakEmbError(f"voice bank {path} holds voices of generator {', '.join(sorted(fps))}, not of "
                                f"{generator.path} ({generator.fingerprint[:8]}); use one bank per generator")

    def nearest_voice_cosines(self) -> np.ndarray:
        """For each voice, the largest cosine to another voice of the bank (NaN when it is alone)."""
        from toucan_speakemb.evaluation.metrics import cosine_similarity_matrix_max

        if len(self) < 2:
            return np.full(len(self), np.nan)
        return cosine_similarity_matrix_max(self.embeddings, self.embeddings, exclude_self=True)[0]

    def save(self, path: Union[str, Path]) -> Path:
        meta = {"kind": KIND, "format_version": FORMAT_VERSION, "profile": self.profile.to_json(),
                "ids": self.ids, "provenance": self.provenance}
        arrays = {"embeddings": self.embeddings, "seeds": self.seeds}
        if self.nearest_training_cosine is not None:
            arrays["nearest_training_cosine"] = self.nearest_training_cosine
        return save_tensors(path, arrays, meta)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "VoiceBank":
        arrays, meta = load_tensors(path, "voice bank", kind=KIND, format_version=FORMAT_VERSION)
        try:
            return cls(arrays["embeddings"], arrays["seeds"], list(meta["ids"]), Profile.from_json(meta["profile"]),
                       meta.get("provenance") or {}, arrays.get("nearest_training_cosine"))
        except KeyError as e:
            raise SpeakEmbError(f"voice bank {path} lacks {e}") from None

    def save_npy(self, path: Union[str, Path]) -> Path:
        buf = io.BytesIO()
        np.save(buf, self.embeddings, allow_pickle=False)
        return atomic_write_bytes(path, buf.getvalue())

def load_generated(path: str | Path, name: Optional[str] = None) -> GeneratedSet:
    """Read generated vectors from a voice bank or embedding set (.safetensors), an interchange .npz or a bare
    (N, d) .npy array (no profile: only its width is checked)."""
    path = Path(path)
    name = name or path.stem
    if not path.exists():
        raise SpeakEmbError(f"generated set not found: {path}")
    if path.suffix == ".npy":
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise SpeakEmbError(f"{path} is not a .npy array (no .npy header)")
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            # numpy's own text would suggest allow_pickle for object arrays; nothing here is ever unpickled
            why = "it holds Python objects, which are never read" if "pickle" in str(e).lower() else \
                "damaged or truncated"
            raise SpeakEmbError(f"{path} is not a readable .npy array ({why})") from None
        if x.ndim != 2 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise SpeakEmbError(f"{path}: expected a numeric (N, d) array, got {x.dtype} of shape {x.shape}")
        x = x.astype(np.float32)
        check_finite(x, f"generated set {path}")
        return GeneratedSet(name, x, None, str(path))
    if path.suffix == ".npz":
        es = EmbeddingSet.from_npz(path)
        return GeneratedSet(name, es.embeddings, None, str(path))  # an .npz profile is only guessed
    _, meta = load_tensors(path, "generated set")
    if meta.get("kind") == "voice-bank":
        bank = VoiceBank.load(path)
        return GeneratedSet(name, bank.embeddings, bank.profile, str(path))
    es = EmbeddingSet.load(path)
    return GeneratedSet(name, es.embeddings, es.profile, str(path))
