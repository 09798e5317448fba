"""The extraction pipeline: a corpus -> an EmbeddingSet in a Toucan profile's space, plus a rejects file.

How a run goes:

1. **Plan.** The utterance list (sorted, see :mod:`corpora`) gets fixed indices. ``--shard K/N`` keeps the
   indices ``i % N == K - 1``; under ``torchrun`` each process takes every ``world_size``-th of those. File
   headers give durations; utterances are sorted by length and cut into batches of similar length (at most
   ``batch_size`` utterances and ``max_batch_seconds`` of padded audio), longest first.
2. **Run.** A DataLoader decodes and preprocesses files in worker processes while the main process runs the
   encoders; bad files come back as rejects with a reason (:data:`audio.REASONS`) instead of stopping the run.
3. **Checkpoint.** Results are written every ``chunk_size`` utterances (and at least every
   ``chunk_seconds``) as atomic chunk files (safetensors + JSON metadata) in a work folder beside the output
   (``OUT.work/``). A killed run loses at most the chunk in progress; the same command resumes, skipping
   every index already in a chunk, so nothing is lost or done twice. The work folder remembers what the run
   is (profile, encoders, corpus); a different job refuses to resume it.
4. **Finalise.** When every index is embedded or rejected, one EmbeddingSet is written in corpus order,
   with ``OUT`` minus its suffix + ``.rejects.csv`` beside it (and ``.speaker-means`` on request), and the
   work folder is removed. A shard finalises into ``OUT.shard-K-of-N.safetensors``; :func:`merge` joins
   shards (or any embedding sets of one profile) into one set.

Under ``torchrun`` every process writes its own chunks into the shared work folder and rank 0 finalises after
a barrier (gloo on CPU, NCCL on GPUs), so a multi-process run gives the same single file as a one-process run.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import logging
import math
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from toucan_speakemb.core.version import __version__
from toucan_speakemb.extract.audio import BadAudio, probe
from toucan_speakemb.extract.corpora import Utterance
from toucan_speakemb.core.embedding_set import EmbeddingSet
from toucan_speakemb.core.distributed import Dist as _Dist, collective as _collective, resolve_device, share
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_json, atomic_write_text, load_tensors, read_json, save_tensors
from toucan_speakemb.core.profiles import DEFAULT_PROFILE, Profile

log = logging.getLogger(__name__)

JOB_FORMAT = 1
CHUNK_KIND = "extract-chunk"
REJECTS_HEADER = ["path", "utterance_id", "speaker_id", "reason", "detail"]


# ---- configuration and results ---------------------------------------------------------------------------


@dataclass
class ExtractConfig:
    profile: str = DEFAULT_PROFILE
    encoder_dirs: Dict[str, Path] = field(default_factory=dict)  # {component: local SpeechBrain folder}
    model_cache: Optional[Path] = None  # where hub models are downloaded to
    toucan_dir: Optional[Path] = None  # toucan-native: a Toucan checkout (v2.3 to v2.b)
    toucan_weights: Optional[Path] = None  # toucan-native: embedding_function.pt
    toucan_vad: bool = True  # toucan-native: Toucan's Silero silence cutting, as its interface does
    device: str = "auto"
    batch_size: Optional[int] = None  # utterances per batch at most; None: 32 on a GPU, 1 on CPU (see _run)
    max_batch_seconds: float = 320.0  # padded audio per batch at most (batch rows x longest row)
    workers: int = -1  # DataLoader worker processes; -1 = one per core minus one (at least 1), 0 = none
    chunk_size: int = 512  # utterances per checkpoint file
    chunk_seconds: float = 60.0  # ... and at least this often
    min_seconds: float = 0.5
    shard: Optional[Tuple[int, int]] = None  # (K, N), 1 <= K <= N
    speaker_means: bool = False
    overwrite: bool = False
    keep_work: bool = False
    progress: bool = True
    corpus_info: Dict[str, Any] = field(default_factory=dict)  # e.g. {"type": "vctk", "root": "..."}


@dataclass
class ExtractResult:
    output: Optional[Path]
    rejects: Optional[Path]
    speaker_means: Optional[Path]
    n_total: int  # utterances this run (shard) is responsible for
    n_embedded: int
    n_rejected: int
    rejected_by_reason: Dict[str, int]
    n_speakers: int
    audio_seconds: float  # audio embedded in this process, this session
    wall_seconds: float
    resumed: int  # utterances found done in the work folder at the start
    finalised: bool  # False on torchrun ranks other than 0

    def summary(self) -> str:
        if not self.finalised:
            return f"done with this process's share ({self.n_embedded} embedded, {self.n_rejected} rejected)"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected_by_reason.items())) or "none"
        lines = [
            f"embedded {self.n_embedded} of {self.n_total} utterances ({self.n_speakers} speakers) -> {self.output}",
            f"rejected {self.n_rejected} ({reasons}) -> {self.rejects}",
        ]
        if self.resumed:
            lines.append(f"resumed: {self.resumed} utterances were already done")
        if self.audio_seconds > 0 and self.wall_seconds > 0:
            lines.append(f"this session: {self.audio_seconds / 3600:.2f} h of audio in {self.wall_seconds:.1f} s "
                         f"(real-time factor {self.wall_seconds / self.audio_seconds:.4f})")
        if self.speaker_means:
            lines.append(f"speaker means -> {self.speaker_means}")
        return "\n".join(lines)


# ---- file names ------------------------------------------------------------------------------------------


def _split_suffix(out: Path) -> Tuple[str, str]:
    name = out.name
    for suf in (".safetensors", ".npz"):
        if name.endswith(suf):
            return name[: -len(suf)], suf
    return name, ""


def rejects_path(out: Path) -> Path:
    stem, _ = _split_suffix(Path(out))
    return Path(out).with_name(stem + ".rejects.csv")


def speaker_means_path(out: Path) -> Path:
    stem, suf = _split_suffix(Path(out))
    return Path(out).with_name(stem + ".speaker-means" + (suf or ".safetensors"))


def shard_output(out: Path, k: int, n: int) -> Path:
    stem, suf = _split_suffix(Path(out))
    return Path(out).with_name(f"{stem}.shard-{k}-of-{n}{suf or '.safetensors'}")


def work_dir(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".work")


# ---- data loading ----------------------------------------------------------------------------------------


class _FileDataset:
    """Map-style dataset over file paths; items are (position, features or None, (reason, detail) or None)."""

    def __init__(self, paths: Sequence[str], frontend):
        self.paths = list(paths)
        self.frontend = frontend

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, j):
        try:
            return j, self.frontend(self.paths[j]), None
        except BadAudio as e:
            return j, None, (e.reason, e.detail)
        except SpeakEmbError as e:  # a setup problem (e.g. a Toucan checkout that cannot run): stop the run
            return j, None, ("fatal", str(e))
        except MemoryError:
            return j, None, ("unreadable", "file too large to decode in memory")
        except Exception as e:  # anything a damaged file can make a decoder or resampler raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return j, None, ("unreadable", f"{type(e).__name__}: {first}"[:300])


def _collate(items):
    import torch

    ok = [(j, x) for j, x, r in items if x is not None]
    bad = [(j, r) for j, x, r in items if x is None]
    if not ok:
        return [], None, None, bad
    lengths = torch.tensor([x.shape[0] for _, x in ok], dtype=torch.long)
    feats = torch.nn.utils.rnn.pad_sequence([x for _, x in ok], batch_first=True)
    return [j for j, _ in ok], feats, lengths, bad


def _worker_init(_, parent: Optional[int] = None):
    import torch

    torch.set_num_threads(1)
    if parent is not None:
        _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this decoding worker the moment its parent dies (a killed `extract` leaves no
    worker behind; without this, DataLoader workers notice only at their next status check, seconds later)."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


def plan_batches(seconds: Sequence[float], batch_size: int, max_batch_seconds: float) -> List[List[int]]:
    """Positions grouped into batches of similar duration, longest batch first."""
    order = sorted(range(len(seconds)), key=lambda j: (-seconds[j], j))
    batches: List[List[int]] = []
    cur: List[int] = []
    longest = 0.0
    for j in order:
        s = seconds[j]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * max(longest, s) > max_batch_seconds):
            batches.append(cur)
            cur, longest = [], 0.0
        cur.append(j)
        longest = max(longest, s)
    if cur:
        batches.append(cur)
    return batches


# ---- chunks ----------------------------------------------------------------------------------------------


def _chunk_files(wd: Path) -> List[Path]:
    d = wd / "chunks"
    return sorted(d.glob("*.safetensors")) if d.is_dir() else []


def _read_chunk(path: Path):
    arrays, meta = load_tensors(path, "checkpoint chunk")
    if meta.get("kind") != CHUNK_KIND:
        raise SpeakEmbError(f"{path} is not an extraction chunk")
    return arrays, meta


def _done_indices(wd: Path) -> set:
    done = set()
    for f in _chunk_files(wd):
        try:
            arrays, meta = _read_chunk(f)
        except SpeakEmbError as e:  # cannot happen with atomic writes short of disk damage: redo its items
            log.warning("ignoring damaged chunk (%s); its utterances will be redone", e)
            f.rename(f.with_suffix(".damaged"))
            continue
        done.update(int(i) for i in arrays["index"])
        done.update(int(r[0]) for r in meta.get("rejects", []))
    return done


class _ChunkWriter:
    def __init__(self, wd: Path, dim: int, rank: int):
        self.dir = wd / "chunks"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tag = f"r{rank:03d}-{uuid.uuid4().hex[:8]}"
        self.seq = 0
        self.dim = dim
        self.reset()

    def reset(self):
        self.index: List[int] = []
        self.rows: List[np.ndarray] = []
        self.rejects: List[List] = []
        self.audio_seconds = 0.0
        self.since = time.monotonic()

    def __len__(self):
        return len(self.index) + len(self.rejects)

    def flush(self):
        if not len(self):
            return
        emb = np.concatenate(self.rows).astype(np.float32) if self.rows else np.zeros((0, self.dim), np.float32)
        save_tensors(self.dir / f"{self.tag}-{self.seq:06d}.safetensors",
                     {"index": np.asarray(self.index, dtype=np.int64), "embeddings": emb},
                     {"kind": CHUNK_KIND, "rejects": self.rejects, "audio_seconds": self.audio_seconds})
        self.seq += 1
        self.reset()


# ---- the run ---------------------------------------------------------------------------------------------


def _corpus_digest(utts: Sequence[Utterance]) -> str:
    h = hashlib.sha1()
    for u in utts:
        h.update(f"{u.utterance_id}\t{u.speaker_id}\n".encode("utf-8"))
    return h.hexdigest()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_workers() -> int:
    return max(1, min(8, _cores() - 1))


def default_batch_size(device) -> int:
    """32 on a GPU. 1 on CPU: there a batch of ECAPA / x-vector activations falls out of the caches, and
    measured on this project's CPU machines a batch of 16 is ~1.5x slower per utterance than one by one
    (benchmarks/bench_extract.py); the pipeline's gain on CPU is decoding beside the encoder instead."""
    return 32 if str(device).startswith("cuda") else 1


def _resolve_workers(cfg: "ExtractConfig") -> int:
    return _default_workers() if cfg.workers is None or cfg.workers < 0 else int(cfg.workers)


class _CpuThreads:
    """On CPU, give the encoder the cores the decoding workers leave free (unless OMP_NUM_THREADS says).

    Intra-op threads plus worker processes beyond the core count make every parallel op wait for its
    slowest thread; on a busy machine that costs several times the compute.
    """

    def __init__(self, workers: int, device: str):
        self.n = None
        if str(device).startswith("cuda") or "OMP_NUM_THREADS" in os.environ:
            return
        self.n = max(1, _cores() - workers)

    def __enter__(self):
        if self.n is not None:
            import torch

            self.before = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.n is not None:
            import torch

            torch.set_num_threads(self.before)


def _prepare_work_dir(wd: Path, target: Path, fingerprint: Dict[str, Any], overwrite: bool) -> None:
    job_file = wd / "job.json"
    if wd.exists():
        job = read_json(job_file, "work folder job file") if job_file.exists() else None
        if job is None:
            raise SpeakEmbError(f"{wd} exists but has no job.json; it is not an extraction work folder "
                                f"(remove it to start over)")
        if job.get("fingerprint") != fingerprint:
            old = job.get("fingerprint") or {}
            diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise SpeakEmbError(f"the work folder {wd} belongs to a different extraction (differs in: "
                                f"{', '.join(diff)}); remove it to start over, or run the original command")
        return
    if target.exists() and not overwrite:
        raise SpeakEmbError(f"{target} exists; pass --overwrite to replace it")
    wd.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job_file, {"kind": "extract-job", "format": JOB_FORMAT, "fingerprint": fingerprint,
                                 "toucan_speakemb": __version__})


def extract(utterances: Sequence[Utterance], out: Path, config: Optional[ExtractConfig] = None,
            encoder=None) -> ExtractResult:
    """Run (or resume) an extraction; returns counts. ``encoder`` may be passed pre-loaded (tests, API use)."""
    from toucan_speakemb.extract.encoders import load_encoder

    cfg = config or ExtractConfig()
    t0 = time.monotonic()
    utts = list(utterances)
    if not utts:
        raise SpeakEmbError("the corpus has no utterances")
    if (cfg.batch_size is not None and cfg.batch_size < 1) or cfg.chunk_size < 1 or cfg.max_batch_seconds <= 0 \
            or cfg.min_seconds < 0:
        raise SpeakEmbError("batch size, chunk size and max batch seconds must be positive")
    out = Path(out)
    target = shard_output(out, *cfg.shard) if cfg.shard else out
    wd = work_dir(target)
    dist = _Dist()
    threads = None
    try:
        threads = _CpuThreads(_resolve_workers(cfg), getattr(encoder, "device", None) or resolve_device(cfg.device))
        threads.__enter__()
        if encoder is None:
            device = cfg.device
            if dist.world > 1 and device in ("auto", "", None) and dist.device.startswith("cuda"):
                device = dist.device
            encoder = _collective(dist, load_encoder, cfg.profile, cfg.encoder_dirs, device, cfg.model_cache,
                                  cfg.toucan_dir, cfg.toucan_weights, cfg.toucan_vad)
        profile: Profile = encoder.profile
        fingerprint = {
            "profile": profile.name,
            "encoders": encoder.identity()["encoders"],
            "min_seconds": cfg.min_seconds,
            "corpus_size": len(utts),
            "corpus_sha1": _corpus_digest(utts),
            "shard": list(cfg.shard) if cfg.shard else None,
        }
        if dist.rank == 0:
            _collective(dist, _prepare_work_dir, wd, target, fingerprint, cfg.overwrite)
        else:
            _collective(dist, lambda: None)
        dist.barrier()

        if cfg.shard:
            k, n = cfg.shard
            responsible = share(range(len(utts)), k - 1, n)
        else:
            responsible = list(range(len(utts)))
        done = _collective(dist, _done_indices, wd)
        dist.barrier()  # every rank has listed the chunks before any rank writes a new one
        resumed = sum(1 for i in responsible if i in done)
        mine = [i for i in share(responsible, dist.rank, dist.world) if i not in done]
        if resumed and dist.rank == 0:
            log.info("resuming: %d of %d utterances already done", resumed, len(responsible))

        audio_seconds, n_emb, n_rej = _run(encoder, utts, mine, wd, cfg, dist)
        audio_seconds = dist.sum(audio_seconds)
        dist.barrier()
        if dist.rank != 0:
            return ExtractResult(None, None, None, len(responsible), n_emb, n_rej, {}, 0, audio_seconds,
                                 time.monotonic() - t0, resumed, False)
        res = _finalise(utts, responsible, wd, target, profile, fingerprint, encoder, cfg)
        res.audio_seconds, res.resumed, res.wall_seconds = audio_seconds, resumed, time.monotonic() - t0
        return res
    finally:
        if threads is not None:
            threads.__exit__(None, None, None)
        dist.close()


def _run(encoder, utts: Sequence[Utterance], mine: List[int], wd: Path, cfg: ExtractConfig, dist: _Dist):
    """Embed the utterances ``mine`` (corpus indices) into chunk files; returns (audio s, embedded, rejected)."""
    from torch.utils.data import DataLoader

    writer = _ChunkWriter(wd, encoder.profile.dim, dist.rank)
    if not mine:
        return 0.0, 0, 0
    # 1. durations from the headers (threads: this is I/O); unreadable headers are rejects already
    paths = [utts[i].path for i in mine]
    with ThreadPoolExecutor(max_workers=8) as pool:
        facts = list(pool.map(_safe_probe, paths))
    usable, seconds = [], []
    for i, f in zip(mine, facts):
        if isinstance(f, BadAudio):
            writer.rejects.append([i, f.reason, f.detail])
        else:
            usable.append(i)
            seconds.append(f.seconds if math.isfinite(f.seconds) else 0.0)
    n_rej = len(writer.rejects)
    n_emb = 0
    audio = 0.0
    bs = cfg.batch_size or default_batch_size(getattr(encoder, "device", "cpu"))
    if not getattr(encoder, "batch_exact", True):
        bs = 1
    batches = plan_batches(seconds, bs, cfg.max_batch_seconds)
    workers = _resolve_workers(cfg)
    ds = _FileDataset([utts[i].path for i in usable], encoder.frontend(cfg.min_seconds))
    loader = DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                        worker_init_fn=functools.partial(_worker_init, parent=os.getpid()) if workers else None,
                        prefetch_factor=4 if workers else None, persistent_workers=False,
                        pin_memory=str(getattr(encoder, "device", "cpu")).startswith("cuda"))
    pbar = None
    if cfg.progress and dist.rank == 0:
        from tqdm import tqdm

        desc = "extract" if dist.world == 1 else f"extract (rank 0 of {dist.world})"
        pbar = tqdm(total=len(mine), unit="utt", desc=desc, dynamic_ncols=True, smoothing=0.05)
        pbar.update(n_rej)
    started = time.monotonic()
    try:
        for js, feats, lengths, bad in loader:
            for j, (reason, detail) in bad:
                if reason == "fatal":
                    raise SpeakEmbError(detail)
                writer.rejects.append([usable[j], reason, detail])
                n_rej += 1
            if js:
                emb, failed = _encode_safely(encoder, feats, lengths)
                for row, j in enumerate(js):
                    i = usable[j]
                    if row in failed:
                        writer.rejects.append([i, "encoder-failed", failed[row]])
                        n_rej += 1
                        continue
                    writer.index.append(i)
                    writer.rows.append(emb[row: row + 1])
                    writer.audio_seconds += seconds[j]
                    audio += seconds[j]
                    n_emb += 1
            if pbar is not None:
                pbar.update(len(js) + len(bad))
                el = time.monotonic() - started
                if audio > 0:
                    pbar.set_postfix_str(f"RTF {el / audio:.4f}, {audio / 3600:.2f} h audio", refresh=False)
            if len(writer) >= cfg.chunk_size or (time.monotonic() - writer.since) >= cfg.chunk_seconds:
                writer.flush()
        writer.flush()
    except KeyboardInterrupt:
        writer.flush()  # Ctrl-C keeps every finished utterance (a SIGKILL loses at most the open chunk)
        raise
    finally:
        if pbar is not None:
            pbar.close()
    return audio, n_emb, n_rej


def _safe_probe(path: str):
    try:
        return probe(path)
    except BadAudio as e:
        return e
    except Exception as e:
        return BadAudio("unreadable", f"{type(e).__name__}: {e}")


def _encode_safely(encoder, feats, lengths) -> Tuple[np.ndarray, Dict[int, str]]:
    """Encode a batch; on failure retry row by row so one bad file costs only itself. Non-finite rows fail."""
    failed: Dict[int, str] = {}
    try:
        emb = encoder.encode(feats, lengths)
    except (SpeakEmbError, KeyboardInterrupt):
        raise
    except Exception as e:
        if feats.shape[0] == 1:
            return np.zeros((1, encoder.profile.dim), np.float32), {0: f"{type(e).__name__}: {e}"[:300]}
        rows = []
        for r in range(feats.shape[0]):
            one, f1 = _encode_safely(encoder, feats[r: r + 1, : int(lengths[r])], lengths[r: r + 1])
            rows.append(one)
            if f1:
                failed[r] = f1[0]
        emb = np.concatenate(rows)
    for r in np.flatnonzero(~np.isfinite(emb).all(axis=1)):
        failed.setdefault(int(r), "the embedding has NaN or infinite values")
    return emb, failed


# ---- finalising ------------------------------------------------------------------------------------------


def _collect(wd: Path, wanted: Sequence[int]):
    want = set(wanted)
    rows: Dict[int, np.ndarray] = {}
    rejects: Dict[int, Tuple[str, str]] = {}
    dup = 0
    for f in _chunk_files(wd):
        arrays, meta = _read_chunk(f)
        emb = arrays["embeddings"]
        for r, i in enumerate(arrays["index"].tolist()):
            if i in rows or i in rejects:
                dup += 1
                continue
            rows[i] = emb[r]
        for i, reason, detail in meta.get("rejects", []):
            if i in rows or i in rejects:
                dup += 1
                continue
            rejects[int(i)] = (reason, detail)
    if dup:
        log.warning("%d utterances were found twice in the work folder (two runs at once?); kept the first", dup)
    missing = want - set(rows) - set(rejects)
    return rows, rejects, missing


def write_rejects(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REJECTS_HEADER)
    for r in rows:
        w.writerow(r)
    return atomic_write_text(path, buf.getvalue())


def read_rejects(path: Path) -> List[List[str]]:
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != REJECTS_HEADER:
        raise SpeakEmbError(f"{path} is not a rejects file (expected the header {','.join(REJECTS_HEADER)})")
    return rows[1:]


def _attributes(us: Sequence[Utterance]):
    gender = [u.gender for u in us]
    age = np.array([u.age for u in us], dtype=np.float32)
    accent = [u.accent for u in us]
    return (gender if any(gender) else None, age if np.isfinite(age).any() else None,
            accent if any(accent) else None)


def _finalise(utts, responsible, wd: Path, target: Path, profile: Profile, fingerprint, encoder,
              cfg: ExtractConfig) -> ExtractResult:
    rows, rejects, missing = _collect(wd, responsible)
    if missing:
        raise SpeakEmbError(f"{len(missing)} utterances are not done yet (a process of this job died or is "
                            f"still running); run the same command again to finish them")
    rej_rows = []
    by_reason: Dict[str, int] = {}
    for i in sorted(rejects):
        reason, detail = rejects[i]
        u = utts[i]
        rej_rows.append([u.path, u.utterance_id, u.speaker_id, reason, detail])
        by_reason[reason] = by_reason.get(reason, 0) + 1
    rpath = write_rejects(rejects_path(target), rej_rows)
    order = sorted(rows)
    if not order:
        raise SpeakEmbError(f"no usable audio: all {len(rejects)} files were rejected (see {rpath})")
    us = [utts[i] for i in order]
    gender, age, accent = _attributes(us)
    prov: Dict[str, Any] = {
        "created_by": "toucan-speakemb extract",
        "toucan_speakemb": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "corpus": dict(cfg.corpus_info, n_utterances=len(utts)),
        "encoders": encoder.identity()["encoders"],
        "preprocessing": profile.name,
        "min_seconds": cfg.min_seconds,
        "n_rejected": len(rejects),
        "level": "utterance",
    }
    if cfg.shard:
        prov["shard"] = {"k": cfg.shard[0], "n": cfg.shard[1],
                         "fingerprint": hashlib.sha1(repr(sorted((k, str(v)) for k, v in fingerprint.items()
                                                                 if k != "shard")).encode()).hexdigest(),
                         "corpus_size": len(utts), "corpus_index": order}
    es = EmbeddingSet(np.stack([rows[i] for i in order]), [u.speaker_id for u in us], profile,
                      [u.utterance_id for u in us], gender, age, accent, prov)
    es.save(target)
    means_path = None
    if cfg.speaker_means:
        means_path = speaker_means_path(target)
        es.speaker_means().save(means_path)
    if not cfg.keep_work:
        shutil.rmtree(wd, ignore_errors=True)
    return ExtractResult(target, rpath, means_path, len(responsible), len(order), len(rejects), by_reason,
                         len(es.speakers), 0.0, 0.0, 0, True)


# ---- merge -----------------------------------------------------------------------------------------------


@dataclass
class MergeResult:
    output: Path
    rejects: Path
    speaker_means: Optional[Path]
    n_embeddings: int
    n_speakers: int
    n_rejected: int
    inputs: List[Path]

    def summary(self) -> str:
        s = (f"merged {len(self.inputs)} files: {self.n_embeddings} embeddings of {self.n_speakers} speakers "
             f"-> {self.output}\nrejects: {self.n_rejected} -> {self.rejects}")
        if self.speaker_means:
            s += f"\nspeaker means -> {self.speaker_means}"
        return s


def merge(inputs: Sequence[Path], out: Path, speaker_means: bool = False, overwrite: bool = False,
          allow_partial: bool = False) -> MergeResult:
    """Join embedding sets of one profile; shards of one extraction are put back into corpus order and must
    all be there (unless ``allow_partial``). Rejects files beside the inputs are joined too."""
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    if not inputs:
        raise SpeakEmbError("merge needs at least one input file")
    if len(set(p.resolve() for p in inputs)) != len(inputs):
        raise SpeakEmbError("the same input file is given twice")
    if out.resolve() in {p.resolve() for p in inputs}:
        raise SpeakEmbError(f"the output {out} is also an input")
    if out.exists() and not overwrite:
        raise SpeakEmbError(f"{out} exists; pass --overwrite to replace it")
    sets = [EmbeddingSet.load(p) for p in inputs]
    for p, s in zip(inputs[1:], sets[1:]):
        sets[0].profile.check_same(s.profile, str(inputs[0]), str(p))
    shards = [s.provenance.get("shard") for s in sets]
    order = list(range(len(sets)))
    row_keys: Optional[List[Tuple[int, int, int]]] = None  # (corpus index, set, row)
    if all(sh for sh in shards):
        fps = {sh.get("fingerprint") for sh in shards}
        ns = {sh.get("n") for sh in shards}
        if len(fps) != 1 or len(ns) != 1:
            raise SpeakEmbError("these shards come from different extractions (profile, encoders or corpus "
                                "differ); merge shards of one run")
        n = ns.pop()
        ks = [sh["k"] for sh in shards]
        dupk = sorted({k for k in ks if ks.count(k) > 1})
        if dupk:
            raise SpeakEmbError(f"shard {dupk[0]} of {n} is given twice")
        missing = sorted(set(range(1, n + 1)) - set(ks))
        if missing and not allow_partial:
            names = ", ".join(str(m) for m in missing[:10])
            k0 = shards[0]["k"]
            example = inputs[0].name.replace(f"shard-{k0}-of-{n}", f"shard-{missing[0]}-of-{n}")
            raise SpeakEmbError(f"missing shard(s) {names} of {n} (e.g. {example}); "
                                f"pass --allow-partial to merge what is there")
        row_keys = sorted((int(ci), si, r) for si, sh in enumerate(shards) for r, ci in enumerate(sh["corpus_index"]))
    elif any(shards):
        log.warning("mixing shard files with other embedding sets: rows are concatenated in input order")
    if row_keys is None:
        row_keys = [(0, si, r) for si in order for r in range(len(sets[si]))]
    # duplicates, named
    seen: Dict[str, int] = {}
    for _, si, r in row_keys:
        uids = sets[si].utterance_ids
        uid = uids[r] if uids is not None else None
        if uid is None:
            continue
        if uid in seen and seen[uid] != si:
            raise SpeakEmbError(f"utterance '{uid}' is in both {inputs[seen[uid]]} and {inputs[si]}")
        seen[uid] = si
    emb = np.stack([sets[si].embeddings[r] for _, si, r in row_keys])
    spk = [sets[si].speaker_ids[r] for _, si, r in row_keys]
    have_uids = all(s.utterance_ids is not None for s in sets)
    uids = [sets[si].utterance_ids[r] for _, si, r in row_keys] if have_uids else None

    def field_of(name, empty):
        if all(getattr(s, name) is None for s in sets):
            return None
        return [getattr(sets[si], name)[r] if getattr(sets[si], name) is not None else empty
                for _, si, r in row_keys]

    gender = field_of("gender", "")
    accent = field_of("accent", "")
    age = field_of("age", np.nan)
    prov = {k: v for k, v in sets[0].provenance.items() if k not in ("shard", "n_rejected", "created")}
    prov.update({"created_by": "toucan-speakemb merge", "toucan_speakemb": __version__,
                 "merged_from": [str(p) for p in inputs],
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    merged = EmbeddingSet(emb, spk, sets[0].profile, uids, gender,
                          None if age is None else np.asarray(age, np.float32), accent, prov)
    rej: List[List[str]] = []
    for p in inputs:
        rej.extend(read_rejects(rejects_path(p)))
    prov["n_rejected"] = len(rej)
    merged.save(out)
    rpath = write_rejects(rejects_path(out), rej)
    mpath = None
    if speaker_means:
        mpath = speaker_means_path(out)
        merged.speaker_means().save(mpath)
    return MergeResult(out, rpath, mpath, len(merged), len(merged.speakers), len(rej), inputs)
