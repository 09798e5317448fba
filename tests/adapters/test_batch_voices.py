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
from toucan_speakemb.adapters.batch_voices import BatchConfig, Plan, merge_batch, plan_batch, run_batch
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
    used = adapter.interface.used_embeddings  # 12 utterances, nothing else
    assert len(used) == 12 and len({tuple(u.numpy().round(6)) for u in used}) == 3


def test_a_killed_batch_resumes_keeping_finished_files(gen, adapter, tmp_path):
    out = tmp_path / "batch"
    assert run_batch(config(gen, out), adapter, progress=False, stop_after=5) is None
    first = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "wavs").rglob("*.wav")}
    assert len(first) == 5 and not (out / "metadata.csv").exists()
    # the merge refuses an incomplete plan, naming what is missing and whose share it is
    with pytest.raises(SpeakEmbError, match=r"7 of 12 utterances are missing .*unfinished: shard-1-of-1"):
        merge_batch(out)
    calls = len(adapter.interface.used_embeddings)
    run_batch(config(gen, out), adapter, progress=False)
    assert len(adapter.interface.used_embeddings) - calls == 7  # only the rest
    for p, (mtime, data) in first.items():
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
    assert len(read_metadata(out)) == 12
    # an uninterrupted batch of the same settings has the same content
    whole = tmp_path / "whole"
    run_batch(config(gen, whole), adapter, progress=False)
    assert read_metadata(whole) == read_metadata(out)
    assert wav_bytes(whole) == wav_bytes(out)


def wav_bytes(out: Path):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "wavs").rglob("*.wav"))}


def sidecars(out: Path):
    """The sidecars without their creation time (and the generator path, the same here)."""
    cars = {}
    for p in sorted((out / "wavs").rglob("*_[0-9][0-9][0-9].json")):
        d = json.loads(p.read_text())
        d.pop("created")
        cars[str(p.relative_to(out))] = d
    return cars


def test_the_plan_lists_every_utterance_and_is_written_once(gen, tmp_path):
    out = tmp_path / "batch"
    plan = plan_batch(config(gen, out))
    assert [j["index"] for j in plan.jobs] == list(range(12))
    assert [j["file"] for j in plan.jobs[:2]] == [f"wavs/{plan.bank.ids[0]}/{plan.bank.ids[0]}_00{k}.wav"
                                                   for k in (1, 2)]
    assert {j["voice_id"] for j in plan.jobs} == set(plan.bank.ids) and not (out / "wavs").exists()
    text = (out / "plan.json").read_text()
    json.loads(text)  # JSON, no pickle
    stamp = (out / "plan.json").stat().st_mtime_ns
    again = plan_batch(config(gen, out))  # a finished plan is read, not redrawn
    assert again.jobs == plan.jobs and (out / "plan.json").stat().st_mtime_ns == stamp
    # shares split by voice: every voice in exactly one share, whatever N
    for n in (1, 2, 3, 5):
        got = sorted(i for k in range(n) for i in plan.voices_of(k, n))
        assert got == [0, 1, 2]


def test_one_worker_and_two_shards_give_identical_files(gen, adapter, tmp_path):
    one = tmp_path / "one"
    run_batch(config(gen, one), adapter, progress=False)
    two = tmp_path / "two"
    # a job array: task 2 first (order must not matter), then task 1; the last one merges
    assert run_batch(config(gen, two, shard="2/2"), adapter, progress=False) is None
    assert not (two / "metadata.csv").exists()
    with pytest.raises(SpeakEmbError, match="missing.*not started by any worker"):
        merge_batch(two)
    assert run_batch(config(gen, two, shard="1/2"), adapter, progress=False) == two / "metadata.csv"
    assert wav_bytes(one) == wav_bytes(two) and len(wav_bytes(one)) == 12
    assert read_metadata(one) == read_metadata(two)
    assert sidecars(one) == sidecars(two)
    assert sorted(p.name for p in (two / "shares").iterdir()) == ["shard-1-of-2.json", "shard-2-of-2.json"]


def test_a_damaged_or_partial_wav_is_made_again(gen, adapter, tmp_path, caplog):
    out = tmp_path / "batch"
    run_batch(config(gen, out), adapter, progress=False)
    good = wav_bytes(out)
    plan = Plan.load(out)
    cut, lone = out / plan.jobs[1]["file"], out / plan.jobs[6]["file"]
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])  # truncated (a copy cut short)
    lone.with_suffix(".json").unlink()  # killed between the wav and its sidecar
    keep = out / plan.jobs[0]["file"]
    stamp = keep.stat().st_mtime_ns
    calls = len(adapter.interface.used_embeddings)
    run_batch(config(gen, out), adapter, progress=False)
    assert len(adapter.interface.used_embeddings) - calls == 2  # only the two
    assert wav_bytes(out) == good and keep.stat().st_mtime_ns == stamp
    assert "2 partial or damaged" in caplog.text


def test_progress_lines_give_rate_and_eta_without_a_terminal(gen, adapter, tmp_path, caplog):
    caplog.set_level("INFO", logger="toucan_speakemb.batch")
    run_batch(config(gen, tmp_path / "b", log_every=5), adapter, progress=True)
    lines = [r.getMessage() for r in caplog.records if "utt/s" in r.getMessage()]
    # one line per 5 utterances, and one at the end
    assert [ln.split(":")[1].split()[0] for ln in lines] == ["5/12", "10/12", "12/12"]
    assert all(ln.startswith("shard-1-of-1: ") and "ETA " in ln for ln in lines)


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
    for bad, word in ((dict(device="gpu"), "device must be auto, cpu, cuda"), (dict(shard="3/2"), "shard 3/2"),
                      (dict(shard="all"), "K/N")):
        with pytest.raises(SpeakEmbError, match=word):
            BatchConfig.from_dict({"generator": "g", "sentences": "s", **bad})
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


def recipe(tmp_path, gen, out, *extra, launcher=(), env_extra=None, **popen):
    """make_voices.py through a stand-in Toucan checkout (built once per tmp_path)."""
    root = tmp_path / "IMS-Toucan"
    if not root.exists():
        standin.make_checkout(root, "v3")
        standin.make_checkpoint(tmp_path / "ToucanTTS.pt", 192, config=True)
        standin.make_vocoder(tmp_path / "Vocoder.pt", v22=False)
    cmd = [*launcher, str(RECIPE / "make_voices.py"), "--no-progress", f"generator={gen.path}", f"out={out}",
           "voices=3", "utterances_per_voice=4", "seed=1", f"toucan_dir={root}", f"tts_model={tmp_path / 'ToucanTTS.pt'}",
           f"vocoder={tmp_path / 'Vocoder.pt'}", f"sentences={RECIPE / 'sentences.txt'}", "device=cpu", *extra]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.Popen(cmd if launcher else [sys.executable, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)


def finish(p):
    so, se = p.communicate(timeout=900)
    assert p.returncode == 0, se[-3000:]
    return so, se


def test_torchrun_two_gloo_ranks_equal_one_process(gen, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    so1, _ = finish(recipe(tmp_path, gen, one))
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    so2, se2 = finish(recipe(tmp_path, gen, two, launcher=torchrun))
    assert so2.count("metadata: ") == 1  # rank 0 merges and reports
    assert "shard-1-of-1.rank-0-of-2" in se2 and "shard-1-of-1.rank-1-of-2" in se2
    assert wav_bytes(one) == wav_bytes(two) and len(wav_bytes(one)) == 12
    assert read_metadata(one) == read_metadata(two) and sidecars(one) == sidecars(two)


def test_kill_9_mid_run_then_rerun_gives_the_files_of_an_uninterrupted_run(gen, tmp_path):
    import signal
    import time

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    finish(recipe(tmp_path, gen, whole))
    # killed as soon as some utterances exist (the stand-in is quick: give it a slow start per utterance)
    p = recipe(tmp_path, gen, killed, "log_every=1", env_extra={"TOUCAN_STANDIN_DELAY": "0.3"})
    deadline = time.monotonic() + 300
    while len(list(killed.rglob("*_0[0-9][0-9].json"))) < 3 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    made = len(list(killed.rglob("*_0[0-9][0-9].json")))
    assert 3 <= made < 12 and not (killed / "metadata.csv").exists()
    r = subprocess.run([sys.executable, str(RECIPE / "make_voices.py"), "--merge", f"out={killed}"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "utterances are missing" in r.stderr and "shard-1-of-1" in r.stderr
    finish(recipe(tmp_path, gen, killed))
    assert wav_bytes(killed) == wav_bytes(whole) and read_metadata(killed) == read_metadata(whole)
    assert sidecars(killed) == sidecars(whole)
