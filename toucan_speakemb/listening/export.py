"""``export-listening-test``: a folder with a self-contained web page, a manifest and a webMUSHRA config.

Output folder::

    listening_test.html   the page to send to listeners: opens from disk in any browser, no network, no server.
                          Audio is embedded as data URIs (one file to send) unless the test is large
                          (--embed auto: above 40 MB of audio) or --no-embed: then it plays audio/... beside it
                          and the whole folder is sent.
    audio/<system>/<item>.wav   the stimuli as played: mono 16-bit wav at one sample rate
    test.json             the manifest: test id, kind, seed, stimuli (system, voice, text, source), trials
    stimuli.csv           the same stimuli as a table
    webmushra/            configs/<test id>.yaml + configs/resources/audio/<test id>/... for a webMUSHRA server

The test id is a hash of the kind, seed, trials and audio, so answers can be matched to their test.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import List, Optional

from toucan_speakemb.core.version import __version__
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from toucan_speakemb.listening.design import KINDS, plan_trials
from toucan_speakemb.listening.stimuli import (
    DEFAULT_VOICE_PATTERN,
    collect_stimuli,
    prepare_audio,
    wav_bytes,
)

log = logging.getLogger(__name__)

TEST_FORMAT = "toucan-speakemb-listening-test"
EMBED_LIMIT_BYTES = 40 * 1024 * 1024
PAGE_NAME = "listening_test.html"


@dataclass
class ExportedTest:
    out: Path
    test_id: str
    kind: str
    n_trials: int
    n_stimuli: int
    sample_rate: int
    embedded: bool
    notes: List[str] = field(default_factory=list)

    @property
    def page(self) -> Path:
        return self.out / PAGE_NAME


def _test_id(kind: str, seed: int, trials: list, wavs: dict) -> str:
    h = hashlib.sha256(json.dumps({"kind": kind, "seed": seed, "trials": trials}, sort_keys=True).encode())
    for sid in sorted(wavs):
        h.update(sid.encode() + b"\0" + hashlib.sha256(wavs[sid]).digest())
    return f"{kind}-{h.hexdigest()[:12]}"


def _audio_rel(sid: str) -> str:
    return f"audio/{sid}.wav"


def export_listening_test(audio_dir, out_dir, kind: str = "mos", reference_dir=None, seed: int = 0,
                          title: Optional[str] = None, embed: Optional[bool] = None, sample_rate: Optional[int] = None,
                          max_per_system: Optional[int] = None, pairs_per_type: int = 8,
                          voice_pattern: str = DEFAULT_VOICE_PATTERN, webmushra: bool = True,
                          progress: bool = True) -> ExportedTest:
    """Build a listening test from ``audio_dir`` (and real recordings in ``reference_dir``) into ``out_dir``.

    ``embed``: True puts the audio inside the page, False links ``audio/``, None decides by size.
    """
    if kind not in KINDS:
        raise SpeakEmbError(f"unknown test kind {kind!r}; choose one of {', '.join(KINDS)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpeakEmbError(f"output {out} is a file, expected a folder")
    stimuli = collect_stimuli(Path(audio_dir), Path(reference_dir) if reference_dir else None, voice_pattern)
    trials, notes = plan_trials(kind, stimuli, seed, max_per_system=max_per_system, pairs_per_type=pairs_per_type)
    seed = int(seed)  # checked by plan_trials; numpy integers become JSON-able
    used = {sid for t in trials for sid in t["stimuli"]}
    stimuli = [s for s in stimuli if s.id in used]
    prepared = prepare_audio(stimuli, sample_rate, progress=progress)
    notes = prepared.notes + notes
    for n in notes[len(prepared.notes):]:
        log.warning(n)
    wavs = {s.id: wav_bytes(prepared.waves[s.id], prepared.sample_rate) for s in stimuli}
    test_id = _test_id(kind, seed, trials, wavs)
    total = sum(len(b) for b in wavs.values())
    if embed is None:
        embed = total <= EMBED_LIMIT_BYTES
        if not embed:
            notes.append(f"{total / 2**20:.0f} MB of audio is too much for one page: the page plays the audio/ "
                         "folder beside it; send the whole output folder")
            log.warning(notes[-1])

    _remove_previous_audio(out, keep={_audio_rel(sid) for sid in wavs})
    for sid, data in wavs.items():
        atomic_write_bytes(out / _audio_rel(sid), data)
    manifest = {
        "format": TEST_FORMAT, "version": 1, "test_id": test_id, "kind": kind, "seed": int(seed),
        "title": title or default_title(kind), "sample_rate": prepared.sample_rate,
        "created_by": f"toucan-speakemb {__version__}",
        "stimuli": {s.id: {"system": s.system, "item": s.item, "voice": s.voice, "text": s.text,
                           "source": str(s.path), "seconds": round(len(prepared.waves[s.id]) / prepared.sample_rate, 3),
                           "file": _audio_rel(s.id), "is_reference": s.is_reference} for s in stimuli},
        "trials": trials, "notes": notes,
    }
    atomic_write_json(out / "test.json", manifest)
    _write_stimuli_csv(out / "stimuli.csv", manifest)
    sources = {sid: ("data:audio/wav;base64," + base64.b64encode(b).decode("ascii")) if embed else _audio_rel(sid)
               for sid, b in wavs.items()}
    atomic_write_text(out / PAGE_NAME, render_page(manifest, sources))
    if webmushra:
        from toucan_speakemb.listening.webmushra import write_webmushra

        write_webmushra(out / "webmushra", manifest, prepared, wavs)
    return ExportedTest(out, test_id, kind, len(trials), len(stimuli), prepared.sample_rate, embed, notes)


def _remove_previous_audio(out: Path, keep: set) -> None:
    """A new export into the folder of an earlier one: its audio files this test does not use are removed
    (only files the earlier test.json lists), so audio/ holds exactly this test's stimuli."""
    try:
        old = load_manifest(out)
    except SpeakEmbError:
        return
    stale = [f for f in (s.get("file") for s in old.get("stimuli", {}).values())
             if isinstance(f, str) and f.startswith("audio/") and ".." not in f and f not in keep]
    for f in stale:
        (out / f).unlink(missing_ok=True)
    log.info("replacing test %s in %s (%d of its audio files removed)", old.get("test_id"), out, len(stale))


def default_title(kind: str) -> str:
    return {"mos": "How natural does this voice sound?", "mushra": "Rate the naturalness of each sample",
            "ab-speaker": "Same speaker or different speakers?"}[kind]


def _write_stimuli_csv(path: Path, manifest: dict) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["stimulus", "system", "item", "voice", "seconds", "file", "source", "text"])
    for sid, s in manifest["stimuli"].items():
        w.writerow([sid, s["system"], s["item"], s["voice"] or "", s["seconds"], s["file"], s["source"], s["text"] or ""])
    atomic_write_text(path, buf.getvalue())


def page_template() -> str:
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def render_page(manifest: dict, sources: dict) -> str:
    """The page: the template with the test (trials, stimuli without source paths, audio) as JSON inside."""
    data = {k: manifest[k] for k in ("format", "version", "test_id", "kind", "seed", "title", "trials")}
    data["stimuli"] = {sid: {"system": s["system"], "item": s["item"], "voice": s["voice"], "src": sources[sid]}
                       for sid, s in manifest["stimuli"].items()}
    # '</' cannot end the script element early once escaped; JSON.parse reads '<\/' as '</'.
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    html = page_template()
    if "/*TEST_DATA*/" not in html:
        raise RuntimeError("page template lacks its data placeholder")
    return html.replace("/*TEST_DATA*/", blob).replace("{{TITLE}}", _html_escape(data["title"]))


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def load_manifest(path) -> dict:
    """A test.json (or the folder holding it), checked to be one of ours."""
    from toucan_speakemb.core.fileio import read_json

    p = Path(path)
    if p.is_dir():
        p = p / "test.json"
    m = read_json(p, "listening test manifest")
    if not isinstance(m, dict) or m.get("format") != TEST_FORMAT:
        raise SpeakEmbError(f"{p} is not a listening test manifest written by export-listening-test")
    return m
