"""Speech corpora -> a list of utterance records (audio path, utterance id, speaker id, attributes).

Layouts understood:

- **LibriSpeech** (and the same layout of LibriTTS without SPEAKERS.TXT): ``<speaker>/<chapter>/<utt>.flac``
  under the corpus folder or its subsets (``train-clean-100/`` ...); speaker gender from ``SPEAKERS.TXT``
  (``ID | SEX | SUBSET | MINUTES | NAME``), looked for in the folder and its parents.
- **VCTK** (0.80 ``wav48/p225/p225_001.wav`` and 0.92 ``wav48_silence_trimmed/p225/p225_001_mic1.flac``):
  age, gender and accent from ``speaker-info.txt`` (``ID AGE GENDER ACCENTS REGION``; ids with or
  without the ``p``). 0.92 has two microphones per utterance; one is used (``mic1`` by default).
- **Folder**: every audio file below a folder; the speaker is the parent folder's name, or the group
  ``speaker`` (else group 1) of a regular expression searched in the path relative to the folder.
- **CSV manifest**: columns ``path`` and ``speaker`` (or ``speaker_id``), optional ``utterance_id``
  (or ``utt_id``), ``gender``, ``age``, ``accent``; relative paths are relative to the manifest's folder.

Records come sorted by utterance id, so the same corpus always gives the same order (which is what makes
resuming, sharding and merging line up).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from toucan_speakemb.extract.audio import AUDIO_EXTENSIONS
from toucan_speakemb.core.errors import SpeakEmbError

CORPUS_TYPES = ("auto", "librispeech", "vctk", "folder", "manifest")


@dataclass(frozen=True)
class Utterance:
    path: str
    utterance_id: str
    speaker_id: str
    gender: str = ""  # "f", "m" or "" (unknown)
    age: float = float("nan")
    accent: str = ""

    def to_json(self) -> List:
        return [self.path, self.utterance_id, self.speaker_id, self.gender,
                None if math.isnan(self.age) else self.age, self.accent]


def _norm_gender(v: str, where: str) -> str:
    s = str(v).strip().lower()
    if s in ("f", "female", "w", "woman"):
        return "f"
    if s in ("m", "male", "man"):
        return "m"
    if s in ("", "u", "unknown", "none", "nan", "?", "-1", "n/a", "na"):
        return ""
    raise SpeakEmbError(f"{where}: unknown gender value {v!r} (expected f, m or empty)")


def _audio_files(root: Path, extensions: Tuple[str, ...] = AUDIO_EXTENSIONS) -> List[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())


def _finish(utts: List[Utterance], what: str) -> List[Utterance]:
    if not utts:
        raise SpeakEmbError(f"{what}: no audio files found")
    utts.sort(key=lambda u: (u.utterance_id, u.path))
    seen: Dict[str, str] = {}
    for u in utts:
        if u.utterance_id in seen:
            raise SpeakEmbError(f"{what}: utterance id '{u.utterance_id}' occurs twice ({seen[u.utterance_id]} "
                                f"and {u.path})")
        seen[u.utterance_id] = u.path
    return utts


# ---- LibriSpeech -----------------------------------------------------------------------------------------


def read_librispeech_speakers(path: Path) -> Dict[str, str]:
    """SPEAKERS.TXT -> {speaker id: gender}."""
    out: Dict[str, str] = {}
    for ln, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 2:
            raise SpeakEmbError(f"{path}:{ln}: expected 'ID | SEX | ...', got {line.strip()!r}")
        out[cols[0]] = _norm_gender(cols[1], f"{path}:{ln}")
    return out


def _find_upwards(start: Path, name: str, levels: int = 3) -> Optional[Path]:
    p = start.resolve()
    for _ in range(levels + 1):
        if (p / name).is_file():
            return p / name
        if p.parent == p:
            break
        p = p.parent
    return None


def librispeech(root: Path, speakers_file: Optional[Path] = None) -> List[Utterance]:
    root = Path(root)
    if not root.is_dir():
        raise SpeakEmbError(f"LibriSpeech folder not found: {root}")
    speakers_file = speakers_file or _find_upwards(root, "SPEAKERS.TXT")
    genders = read_librispeech_speakers(speakers_file) if speakers_file else {}
    utts = []
    for f in _audio_files(root, (".flac", ".wav")):
        rel = f.relative_to(root).parts
        if len(rel) < 3:  # <speaker>/<chapter>/<file>, possibly below a subset folder
            continue
        speaker, chapter = rel[-3], rel[-2]
        if not (speaker.isdigit() and chapter.isdigit()):
            continue
        utts.append(Utterance(str(f), f.stem, speaker, genders.get(speaker, "")))
    return _finish(utts, f"LibriSpeech corpus {root}")


# ---- VCTK ------------------------------------------------------------------------------------------------


def read_vctk_speaker_info(path: Path) -> Dict[str, Tuple[str, float, str]]:
    """speaker-info.txt -> {speaker id with 'p': (gender, age, accent)}."""
    out: Dict[str, Tuple[str, float, str]] = {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for ln, line in enumerate(lines, 1):
        cols = line.split()
        if not cols or cols[0].upper() == "ID" or line.lstrip().startswith(("#", ";")):
            continue
        if len(cols) < 3:
            raise SpeakEmbError(f"{path}:{ln}: expected 'ID AGE GENDER ACCENTS ...', got {line.strip()!r}")
        sid = cols[0] if cols[0][0].isalpha() else f"p{cols[0]}"
        try:
            age = float(cols[1])
        except ValueError:
            age = float("nan")
        gender = _norm_gender(cols[2], f"{path}:{ln}")
        accent = cols[3] if len(cols) > 3 else ""
        out[sid] = (gender, age, accent)
    return out


def vctk(root: Path, mic: str = "mic1") -> List[Utterance]:
    root = Path(root)
    if not root.is_dir():
        raise SpeakEmbError(f"VCTK folder not found: {root}")
    info_file = _find_upwards(root, "speaker-info.txt")
    info = read_vctk_speaker_info(info_file) if info_file else {}
    audio_root = root
    for sub in ("wav48_silence_trimmed", "wav48"):
        if (root / sub).is_dir():
            audio_root = root / sub
            break
    mic_re = re.compile(r"_(mic\d)$")
    utts = []
    for f in _audio_files(audio_root):
        if f.parent == audio_root:
            continue
        stem = f.stem
        m = mic_re.search(stem)
        if m:
            if m.group(1) != mic:
                continue
            stem = stem[: m.start()]
        speaker = f.parent.name
        g, a, acc = info.get(speaker, ("", float("nan"), ""))
        utts.append(Utterance(str(f), stem, speaker, g, a, acc))
    return _finish(utts, f"VCTK corpus {root}")


# ---- folder ----------------------------------------------------------------------------------------------


def folder(root: Path, speaker_regex: Optional[str] = None) -> List[Utterance]:
    root = Path(root)
    if not root.is_dir():
        raise SpeakEmbError(f"corpus folder not found: {root}")
    rx = None
    if speaker_regex:
        try:
            rx = re.compile(speaker_regex)
        except re.error as e:
            raise SpeakEmbError(f"bad --speaker-regex {speaker_regex!r}: {e}") from None
        if rx.groups == 0:
            raise SpeakEmbError(f"--speaker-regex {speaker_regex!r} has no group; mark the speaker with "
                                f"(?P<speaker>...) or (...)")
    utts = []
    for f in _audio_files(root):
        rel = f.relative_to(root)
        rel_s = rel.as_posix()
        if rx is not None:
            m = rx.search(rel_s)
            if not m:
                raise SpeakEmbError(f"--speaker-regex {speaker_regex!r} does not match {rel_s}")
            speaker = m.group("speaker") if "speaker" in rx.groupindex else m.group(1)
        else:
            if len(rel.parts) < 2:
                raise SpeakEmbError(f"{f} lies directly in the corpus folder, so it has no speaker folder; "
                                    f"put each speaker's files in a sub-folder or pass --speaker-regex")
            speaker = rel.parts[-2]
        utts.append(Utterance(str(f), rel.with_suffix("").as_posix(), speaker))
    return _finish(utts, f"corpus folder {root}")


# ---- CSV manifest ----------------------------------------------------------------------------------------

_ALIASES = {
    "path": ("path", "audio", "audio_path", "file", "wav"),
    "speaker": ("speaker", "speaker_id", "spk"),
    "utterance_id": ("utterance_id", "utt_id", "id"),
    "gender": ("gender", "sex"),
    "age": ("age",),
    "accent": ("accent",),
}


def manifest(csv_path: Path) -> List[Utterance]:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise SpeakEmbError(f"manifest not found: {csv_path}")
    text = csv_path.read_text(encoding="utf-8-sig", errors="replace")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    header = {h.strip().lower(): h for h in (rows[0].keys() if rows else [])}
    if not rows:
        raise SpeakEmbError(f"manifest {csv_path} has no rows")
    col: Dict[str, Optional[str]] = {}
    for key, names in _ALIASES.items():
        col[key] = next((header[n] for n in names if n in header), None)
    missing = [k for k in ("path", "speaker") if col[k] is None]
    if missing:
        raise SpeakEmbError(f"manifest {csv_path} lacks the column(s) {', '.join(missing)} "
                            f"(has: {', '.join(header.values())})")
    base = csv_path.parent
    utts = []
    for i, r in enumerate(rows, 2):
        where = f"{csv_path}:{i}"
        p = (r.get(col["path"]) or "").strip()
        spk = (r.get(col["speaker"]) or "").strip()
        if not p or not spk:
            raise SpeakEmbError(f"{where}: empty path or speaker")
        path = Path(p) if Path(p).is_absolute() else base / p
        uid = (r.get(col["utterance_id"]) or "").strip() if col["utterance_id"] else ""
        age = float("nan")
        if col["age"] and (r.get(col["age"]) or "").strip():
            try:
                age = float(r[col["age"]])
            except ValueError:
                raise SpeakEmbError(f"{where}: age {r[col['age']]!r} is not a number") from None
        utts.append(Utterance(
            str(path), uid or Path(p).with_suffix("").as_posix(), spk,
            _norm_gender(r.get(col["gender"]) or "", where) if col["gender"] else "",
            age, (r.get(col["accent"]) or "").strip() if col["accent"] else ""))
    return _finish(utts, f"manifest {csv_path}")


# ---- dispatch --------------------------------------------------------------------------------------------


def detect_type(path: Path) -> str:
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return "manifest"
        raise SpeakEmbError(f"{path} is a file but not a CSV manifest")
    if not path.is_dir():
        raise SpeakEmbError(f"corpus not found: {path}")
    if _find_upwards(path, "speaker-info.txt", 1) or (path / "wav48_silence_trimmed").is_dir() or (path / "wav48").is_dir():
        return "vctk"
    if _find_upwards(path, "SPEAKERS.TXT", 2):
        return "librispeech"
    return "folder"


def load_corpus(path: Path, corpus_type: str = "auto", speaker_regex: Optional[str] = None,
                vctk_mic: str = "mic1") -> Tuple[str, List[Utterance]]:
    """(detected type, utterance records) for a corpus path."""
    if corpus_type not in CORPUS_TYPES:
        raise SpeakEmbError(f"unknown corpus type '{corpus_type}' (one of {', '.join(CORPUS_TYPES)})")
    t = detect_type(path) if corpus_type == "auto" else corpus_type
    if speaker_regex and t != "folder":
        raise SpeakEmbError(f"--speaker-regex applies to folder corpora, but {path} is read as {t}")
    if t == "librispeech":
        return t, librispeech(path)
    if t == "vctk":
        return t, vctk(path, vctk_mic)
    if t == "folder":
        return t, folder(path, speaker_regex)
    return t, manifest(path)


def speakers_of(utts: Iterable[Utterance]) -> List[str]:
    return list(dict.fromkeys(u.speaker_id for u in utts))
