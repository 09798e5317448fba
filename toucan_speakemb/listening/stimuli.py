"""Finding the stimuli of a listening test in a folder of audio, and preparing them for playback.

How a file's *system*, *voice* and *text* are known (first match wins):

system
    the ``system`` column of a ``metadata.csv`` that lists the file; else the first sub-folder of the audio
    folder the file sits in (``AUDIO/generated/x.wav`` -> ``generated``); else, for files directly in the
    audio folder, the folder's own name. Files of ``--reference DIR`` are the system ``reference``.
voice
    a JSON sidecar next to the file (``x.json`` with ``voice_id``, ``voice``, ``speaker_id`` or ``speaker``);
    else the voice column of a ``metadata.csv`` (same names); else the folder between the system folder and
    the file (``generated/<voice>/x.wav``); else the part of the file name before its last ``_``
    (``<voice>_<utt>.wav``, the pattern can be changed). Only the ab-speaker test needs voices.
text
    the ``text`` key or column of the sidecar / metadata.csv (optional; used to pick MUSHRA references).

A stimulus is named ``<system>/<item>`` where item is the file name without extension; two files that would
get one name within a system (``a.wav`` and ``a.flac``, ``A.wav`` and ``a.wav``, ``x/a.wav`` and
``y/a.wav``) are refused, because names identify stimuli in the answers and in the page.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from toucan_speakemb.extract.audio import AUDIO_EXTENSIONS, BadAudio, audio_info, read_audio, to_mono
from toucan_speakemb.core.errors import SpeakEmbError

log = logging.getLogger(__name__)

REFERENCE_SYSTEM = "reference"
DEFAULT_VOICE_PATTERN = r"^(?P<voice>.+)_[^_]+$"
_VOICE_KEYS = ("voice_id", "voice", "speaker_id", "speaker")
_FILE_KEYS = ("file", "path", "filename", "wav", "audio")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Stimulus:
    """One audio file of the test, as found on disk."""

    system: str
    item: str
    path: Path
    sample_rate: int
    frames: int
    channels: int
    voice: Optional[str] = None
    text: Optional[str] = None
    is_reference: bool = False

    @property
    def id(self) -> str:
        return f"{self.system}/{self.item}"

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


@dataclass
class PreparedAudio:
    """Stimuli converted to mono 16-bit wav at one sample rate; ``notes`` say what was changed and why."""

    stimuli: List[Stimulus]
    sample_rate: int
    waves: Dict[str, np.ndarray]  # stimulus id -> float32 mono samples at sample_rate
    notes: List[str] = field(default_factory=list)


def safe_name(name: str) -> str:
    """A name usable in file paths, URLs and webMUSHRA condition keys."""
    return _SAFE.sub("_", name).strip("._") or "_"


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _read_metadata_csvs(root: Path) -> Dict[Path, Dict[str, str]]:
    """Rows of every metadata.csv under root, keyed by the resolved path of the file each row names."""
    rows: Dict[Path, Dict[str, str]] = {}
    for meta in sorted(root.rglob("metadata.csv")):
        if _is_hidden(meta.relative_to(root)):
            continue
        try:
            with open(meta, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                fields = {k.strip().lower(): k for k in (reader.fieldnames or [])}
                file_col = next((fields[k] for k in _FILE_KEYS if k in fields), None)
                if file_col is None:
                    log.warning("%s has no file column (%s); ignored", meta, "/".join(_FILE_KEYS))
                    continue
                for row in reader:
                    low = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
                    name = (row.get(file_col) or "").strip()
                    if name:
                        rows[(meta.parent / name).resolve()] = low
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise SpeakEmbError(f"cannot read {meta} ({e})") from None
    return rows


def _sidecar(path: Path) -> Dict[str, str]:
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        obj = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpeakEmbError(f"sidecar {side} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise SpeakEmbError(f"sidecar {side} must hold a JSON object")
    return {str(k).lower(): str(v) for k, v in obj.items() if v is not None}


def _first(d: Dict[str, str], keys: Sequence[str]) -> Optional[str]:
    for k in keys:
        if d.get(k):
            return d[k]
    return None


def scan_folder(root: Path, system: Optional[str] = None, is_reference: bool = False,
                voice_pattern: str = DEFAULT_VOICE_PATTERN) -> List[Stimulus]:
    """Every audio file under ``root`` as a Stimulus (system, voice, text as the module doc says)."""
    root = Path(root)
    what = "reference folder" if is_reference else "audio folder"
    if not root.exists():
        raise SpeakEmbError(f"{what} not found: {root}")
    if not root.is_dir():
        raise SpeakEmbError(f"{what} {root} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                   and not _is_hidden(p.relative_to(root)))
    if not files:
        others = sum(1 for p in root.rglob("*") if p.is_file())
        raise SpeakEmbError(f"{what} {root} holds no audio files ({others} other files; looked for "
                            f"{', '.join(AUDIO_EXTENSIONS)})")
    meta_rows = _read_metadata_csvs(root)
    voice_re = re.compile(voice_pattern)
    out, bad = [], []
    for p in files:
        try:
            frames, sr, channels = audio_info(p)
        except BadAudio as e:
            bad.append(f"{p.relative_to(root)} ({e})")
            continue
        if frames == 0:
            bad.append(f"{p.relative_to(root)} (no samples)")
            continue
        rel = p.relative_to(root)
        info = {**meta_rows.get(p.resolve(), {}), **_sidecar(p)}
        sysname = system or info.get("system") or (rel.parts[0] if len(rel.parts) > 1 else root.resolve().name)
        voice = _first(info, _VOICE_KEYS)
        if voice is None:
            inner = rel.parts[1:-1] if (system is None and len(rel.parts) > 1) else rel.parts[:-1]
            if inner:
                voice = inner[-1]
            else:
                m = voice_re.match(p.stem)
                if m:
                    voice = m.groupdict().get("voice") or (m.group(1) if m.groups() else None)
        out.append(Stimulus(system=sysname, item=p.stem, path=p, sample_rate=sr, frames=frames, channels=channels,
                            voice=voice, text=info.get("text") or None, is_reference=is_reference))
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise SpeakEmbError(f"{len(bad)} unreadable audio file(s) in {root}: {'; '.join(bad[:5])}{more}")
    return out


def collect_stimuli(audio_dir: Path, reference_dir: Optional[Path] = None,
                    voice_pattern: str = DEFAULT_VOICE_PATTERN) -> List[Stimulus]:
    """The stimuli of ``audio_dir`` (systems from sub-folders / metadata) plus real recordings as ``reference``.

    Names are made safe for paths and URLs; a clash of two files on one name within a system, or of a system
    with the reference's name, is refused with the files involved.
    """
    try:
        re.compile(voice_pattern)
    except re.error as e:
        raise SpeakEmbError(f"voice pattern {voice_pattern!r} is not a valid regular expression ({e})") from None
    stimuli = scan_folder(audio_dir, voice_pattern=voice_pattern)
    if any(safe_name(s.system).lower() == REFERENCE_SYSTEM for s in stimuli):
        raise SpeakEmbError(f"{audio_dir} has a system named '{REFERENCE_SYSTEM}', the name kept for --reference "
                            "recordings; rename that folder")
    if reference_dir is not None:
        stimuli += scan_folder(reference_dir, system=REFERENCE_SYSTEM, is_reference=True,
                               voice_pattern=voice_pattern)
    by_name: Dict[Tuple[str, str], List[Stimulus]] = {}
    systems: Dict[str, set] = {}
    for s in stimuli:
        systems.setdefault(safe_name(s.system).lower(), set()).add(s.system)
        s.system, s.item = safe_name(s.system), safe_name(s.item)
        by_name.setdefault((s.system.lower(), s.item.lower()), []).append(s)
    clash = [names for names in systems.values() if len(names) > 1]
    if clash:
        raise SpeakEmbError("system names that differ only in case or punctuation: "
                            + "; ".join(" / ".join(sorted(c)) for c in clash))
    dups = [group for group in by_name.values() if len(group) > 1]
    if dups:
        shown = "; ".join(f"{g[0].system}/{g[0].item}: " + ", ".join(str(s.path) for s in g) for g in dups[:3])
        more = f" (and {len(dups) - 3} more)" if len(dups) > 3 else ""
        raise SpeakEmbError(f"duplicate file names within a system ({len(dups)}): {shown}{more}; "
                            "a stimulus is named <system>/<file name without extension>, rename one of each")
    return stimuli


def common_sample_rate(stimuli: Sequence[Stimulus]) -> int:
    """The most frequent sample rate, so the fewest files are resampled; of tied rates the highest.

    Why the highest: upsampling adds no band but loses none either, so those files sound as they did, while
    downsampling removes the band above the new Nyquist frequency and would make one system sound duller than
    it is; the cost is larger audio files. (The most frequent rate may still be lower than some files'; the
    notes then say which files lose band, and ``--sample-rate`` can keep it.)
    """
    counts = Counter(s.sample_rate for s in stimuli)
    return max(counts, key=lambda sr: (counts[sr], sr))


def prepare_audio(stimuli: Sequence[Stimulus], sample_rate: Optional[int] = None, progress: bool = True) -> PreparedAudio:
    """Decode every stimulus, mix to mono and resample to one rate (a browser test plays them side by side).

    Resampling uses a polyphase filter (scipy); every changed file is listed in the notes.
    """
    from math import gcd

    from scipy.signal import resample_poly
    from tqdm import tqdm

    if not stimuli:
        raise SpeakEmbError("no stimuli to prepare")
    rate = int(sample_rate) if sample_rate is not None else common_sample_rate(stimuli)
    if rate < 8000 or rate > 192000:
        raise SpeakEmbError(f"sample rate {rate} Hz is outside 8000-192000 Hz")
    waves: Dict[str, np.ndarray] = {}
    resampled, downsampled, mixed = [], [], []
    for s in tqdm(stimuli, desc="audio", unit="file", disable=not progress, leave=False):
        try:
            wave, sr = read_audio(s.path)
        except BadAudio as e:
            raise SpeakEmbError(f"cannot read {s.path} ({e})") from None
        if wave.ndim == 2 and wave.shape[1] > 1:
            mixed.append(s.id)
        mono = to_mono(wave)
        if not np.all(np.isfinite(mono)):
            raise SpeakEmbError(f"{s.path} contains NaN or infinite samples")
        if sr != rate:
            g = gcd(sr, rate)
            mono = resample_poly(mono, rate // g, sr // g)
            resampled.append(f"{s.id} ({sr} Hz)")  # the id: file names repeat across systems
            if sr > rate:
                downsampled.append(sr)
        waves[s.id] = mono.astype(np.float32)
    notes = []
    if resampled:
        notes.append(f"resampled {len(resampled)} of {len(stimuli)} files to {rate} Hz for the test: "
                     + ", ".join(resampled))
    if downsampled:
        notes.append(f"{len(downsampled)} of them lose their band above {rate // 2} Hz; --sample-rate "
                     f"{max(downsampled)} keeps it")
    if mixed:
        notes.append(f"mixed {len(mixed)} multi-channel files down to mono: " + ", ".join(mixed))
    for n in notes:
        log.warning(n)
    return PreparedAudio(list(stimuli), rate, waves, notes)


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM wav (what every browser and webMUSHRA play), clipped to [-1, 1]."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()
