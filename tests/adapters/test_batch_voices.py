"""Specification of recipes/batch_voices: a folder of wavs with one new voice per speaker id, metadata.csv and
the voice bank; resumable after a kill. Run with the adapter's stand-in (tests/toucan_standin.py) through the
same code path the real Toucan interface takes (tests/adapters/test_toucan_integration.py covers the real classes)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import toucan_standin as standin
from toucan_speakemb import SpeakEmbError
from toucan_speakemb.adapters import ToucanAdapter
from toucan_speakemb.adapters.batch_voices import BatchConfig, run_batch
from toucan_speakemb.voices.bank import VoiceBank
from toucan_speakemb.voices.novelty import resolve_rule

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "batch_voices"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gen(tiny_generator):
    return tiny_generator


@pytest.fixture
def adapter(tmp_path):
    tts = standin.make_checkpoint(tmp_path / "m" / "ToucanTTS.pt", 192, config=True)
    voc = standin.make_vocoder(tmp_path / "m" / "Vocoder.pt", v22=False)
    return ToucanAdapter(standin.ToucanTTSInterface(tts_model_path=str(tts), vocoder_model_path=str(voc)))


def config(gen, out, **kw) -> BatchConfig:
    d = dict(generator=str(gen.path), sentences=str(RECIPE / "sentences.txt"), out=str(out), voices=3,
             utterances_per_voice=4, seed=1)
    d.update(kw)
    return BatchConfig.from_dict(d)


def read_metadata(out: Path):
    with open(out / "metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_batch_is_a_folder_per_new_voice_with_metadata_and_the_bank(gen, adapter, tmp_path):
    out = tmp_path / "batch"
    run_batch(config(gen, out), adapter, progress=False)
    bank = VoiceBank.load(out / "voices.safetensors")
    assert len(bank) == 3 and sorted(p.name for p in (out / "wavs").iterdir()) == sorted(bank.ids)
    rows = read_metadata(out)
    assert len(rows) == 12 and list(rows[0]) == ["file", "voice_id", "seed", "text", "duration_s",
                                                 "nearest_training_cosine", "nearest_voice_cosine",
                                                 "threshold", "threshold_rule"]
    sentences = (RECIPE / "sentences.txt").read_text().splitlines()
    thr = resolve_rule(gen, None)[0]  # the default rule
    for r in rows:
        wave, sr = sf.read(out / r["file"])
        assert sr == 24000 and float(r["duration_s"]) == pytest.approx(len(wave) / sr, abs=1e-3)
        assert r["voice_id"] in bank.ids and int(r["seed"]) == int(bank.seeds[bank.ids.index(r["voice_id"])])
        assert r["text"] in sentences and Path(r["file"]).parent.name == r["voice_id"]
        assert float(r["nearest_training_cosine"]) <= thr + 1e-6 and float(r["nearest_voice_cosine"]) <= thr + 1e-6
    # every voice says different sentences when there are enough of them
    for vid in bank.ids:
        texts = [r["text"] for r in rows if r["voice_id"] == vid]
        assert len(set(texts)) == 4
    # the audio is in the voice it says: utterances of one voice share its embedding in the model
    used = adapter.interface.used_embeddings
    assert len(used) == 12 and len({tuple(u.numpy().round(6)) for u in used}) == 3


def test_a_killed_batch_resumes_keeping_finished_files(gen, adapter, tmp_path):
    out = tmp_path / "batch"
    run_batch(config(gen, out), adapter, progress=False, stop_after=5)
    first = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "wavs").rglob("*.wav")}
    assert len(first) == 5 and len(read_metadata(out)) == 5
    calls = len(adapter.interface.used_embeddings)
    run_batch(config(gen, out), adapter, progress=False)
    assert len(adapter.interface.used_embeddings) - calls == 7  # only the rest was synthesised
    for p, (mtime, data) in first.items():
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
    assert len(read_metadata(out)) == 12
    # an uninterrupted batch of the same settings has the same content
    whole = tmp_path / "whole"
    run_batch(config(gen, whole), adapter, progress=False)
    assert [{k: v for k, v in r.items()} for r in read_metadata(whole)] == read_metadata(out)


def test_resuming_with_other_settings_is_refused(gen, adapter, tmp_path):
    out = tmp_path / "batch"
    run_batch(config(gen, out, voices=2, utterances_per_voice=1), adapter, progress=False)
    with pytest.raises(SpeakEmbError) as e:
        run_batch(config(gen, out, voices=2, utterances_per_voice=1, seed=2), adapter, progress=False)
    assert "other settings" in str(e.value) and "seed" in str(e.value)


def test_an_utterance_toucan_cannot_make_is_logged_and_skipped(gen, adapter, tmp_path, monkeypatch, caplog):
    out = tmp_path / "batch"
    real = adapter.synthesize

    def flaky(text, **kw):
        if text.startswith("The quick"):
            raise RuntimeError("phonemizer failed")
        return real(text, **kw)

    monkeypatch.setattr(adapter, "synthesize", flaky)
    run_batch(config(gen, out, voices=3, utterances_per_voice=10), adapter, progress=False)
    skipped = list(csv.DictReader(open(out / "skipped.csv")))
    assert len(skipped) == 3 and all(s["reason"] == "phonemizer failed" for s in skipped)
    assert len(read_metadata(out)) == 27 and "phonemizer failed" in caplog.text


def test_bad_batch_configs_are_one_line_errors(gen, tmp_path):
    with pytest.raises(SpeakEmbError) as e:
        BatchConfig.from_dict({"generator": "g", "sentences": "s", "voices": 0})
    assert "voices" in str(e.value)
    with pytest.raises(SpeakEmbError) as e:
        BatchConfig.from_dict({"generator": "g", "sentences": "s", "voicez": 3})
    assert "unknown key 'voicez'" in str(e.value)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SpeakEmbError) as e:
        run_batch(config(gen, tmp_path / "o", sentences=str(tmp_path / "empty.txt"), toucan_dir=str(tmp_path)))
    assert "no sentences" in str(e.value)


def test_the_recipe_script_runs_through_a_toucan_checkout(gen, tmp_path):
    root = standin.make_checkout(tmp_path / "IMS-Toucan", "v3")
    tts = standin.make_checkpoint(tmp_path / "ToucanTTS.pt", 192, config=True)
    voc = standin.make_vocoder(tmp_path / "Vocoder.pt", v22=False)
    cmd = [sys.executable, str(RECIPE / "make_voices.py"), "--no-progress", f"generator={gen.path}",
           f"out={tmp_path / 'out'}", "voices=2", "utterances_per_voice=2", f"toucan_dir={root}", f"tts_model={tts}",
           f"vocoder={voc}", f"sentences={RECIPE / 'sentences.txt'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(read_metadata(tmp_path / "out")) == 4
    state = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert state["settings"]["voices"] == 2 and state["config"]["toucan_dir"] == str(root)
