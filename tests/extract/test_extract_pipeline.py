"""The extraction pipeline end to end: bad audio, batching, resuming after a kill, shards + merge, torchrun.

Random-weight models give embeddings of the right shape through the real code path; these tests compare
runs with each other and with one-by-one encoding, never with speaker identity.
"""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import ESPEAK_VOICES, SENTENCES, assert_one_error_line, read_audio, speak, write_audio
from toucan_speakemb.extract.audio import load_and_preprocess
from toucan_speakemb.extract.corpora import load_corpus
from toucan_speakemb.core.embedding_set import EmbeddingSet
from toucan_speakemb.extract.encoders import load_encoder, parse_encoder_dirs
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.extract.pipeline import (
    ExtractConfig,
    extract,
    merge,
    rejects_path,
    shard_output,
    speaker_means_path,
    work_dir,
)
from toucan_speakemb.core.profiles import get_profile

GOOD = 13  # 9 plain + stereo, 8 kHz, 48 kHz flac, ogg
BAD = {"bad/corrupt": "unreadable", "bad/empty": "empty", "bad/silent": "silent", "bad/nan": "non-finite",
       "bad/short": "too-short"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A folder corpus of espeak-ng speech in assorted formats, plus one file of every bad kind."""
    root = tmp_path_factory.mktemp("mixed")
    for s in range(3):
        for u in range(3):
            speak(root / f"s{s}" / f"u{u}.wav", SENTENCES[(s * 3 + u) % len(SENTENCES)][: 30 + 12 * u],
                  voice=ESPEAK_VOICES[s], speed=175 + 15 * u)
    wave, sr = read_audio(root / "s0" / "u1.wav")
    write_audio(root / "s0" / "stereo.wav", np.stack([wave, 0.7 * wave], 1), sr)
    for name, rate, fmt, sub in (("rate8k.wav", 8000, "WAV", "PCM_16"), ("rate48k.flac", 48000, "FLAC", "PCM_24"),
                                 ("vorbis.ogg", 22050, "OGG", "VORBIS")):
        n = int(len(wave) * rate / sr)
        x = np.interp(np.linspace(0, len(wave) - 1, n), np.arange(len(wave)), wave)
        sf.write(str(root / ("s1" if "rate" in name else "s2") / name), x, rate, format=fmt, subtype=sub)
    bad = root / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt this is not audio" * 10)
    (bad / "empty.wav").write_bytes(b"")
    sf.write(str(bad / "silent.wav"), np.zeros(32000), 16000)
    x = 0.3 * np.sin(np.arange(32000) / 7.0)
    x[500] = np.nan
    sf.write(str(bad / "nan.wav"), x, 16000, subtype="FLOAT")
    sf.write(str(bad / "short.wav"), 0.3 * np.sin(np.arange(3000) / 7.0), 16000)
    return root


@pytest.fixture(scope="module")
def utts(mixed):
    return load_corpus(mixed)[1]


@pytest.fixture(scope="module")
def small_dirs(sb_small_root):
    return parse_encoder_dirs([str(sb_small_root)], get_profile("toucan-v2.2"))


@pytest.fixture(scope="module")
def encoder(small_dirs):
    return load_encoder("toucan-v2.2", small_dirs, device="cpu")


def cfg(**kw):
    base = dict(workers=1, progress=False, batch_size=4, chunk_size=4)
    base.update(kw)
    return ExtractConfig(**base)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, utts, encoder):
    out = tmp_path_factory.mktemp("ref") / "ref.safetensors"
    res = extract(utts, out, cfg(), encoder=encoder)
    return res, EmbeddingSet.load(out)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)).max())


def assert_same_set(a: EmbeddingSet, b: EmbeddingSet):
    assert a.utterance_ids == b.utterance_ids
    assert a.speaker_ids == b.speaker_ids
    assert a.profile.name == b.profile.name
    assert rel_err(a.embeddings[:, :192], b.embeddings[:, :192]) < 1e-4  # ECAPA: deterministic
    assert rel_err(a.embeddings[:, 192:], b.embeddings[:, 192:]) < 2e-2  # x-vector: SpeechBrain adds noise


def test_bad_audio_never_stops_a_run(reference, mixed):
    res, es = reference
    assert res.n_total == GOOD + len(BAD)
    assert res.n_embedded == GOOD and len(es) == GOOD
    assert res.n_rejected == len(BAD)
    assert res.rejected_by_reason == {r: 1 for r in BAD.values()}
    assert es.profile.name == "toucan-v2.2" and es.dim == 704
    assert {"s0/stereo", "s1/rate8k", "s1/rate48k", "s2/vorbis"} <= set(es.utterance_ids)
    assert sorted(es.speakers) == ["s0", "s1", "s2"]
    with open(res.rejects) as f:
        rows = list(csv.DictReader(f))
    assert {r["utterance_id"]: r["reason"] for r in rows} == BAD
    assert all(r["path"].startswith(str(mixed)) and r["detail"] for r in rows)
    assert res.rejects == rejects_path(res.output)
    summary = res.summary()
    assert f"embedded {GOOD} of {GOOD + len(BAD)}" in summary and "rejected 5" in summary
    assert not work_dir(res.output).exists()  # finished: the checkpoints are gone


def test_rows_equal_encoding_each_file_alone(reference, utts, encoder):
    _, es = reference
    by_id = {u.utterance_id: u for u in utts}
    for uid, row in zip(es.utterance_ids, es.embeddings):
        w = load_and_preprocess(by_id[uid].path, "toucan-v2.2")
        alone = encoder.encode(w.unsqueeze(0), torch.tensor([len(w)]))[0]
        assert rel_err(row[:192], alone[:192]) < 1e-4, uid
        assert rel_err(row[192:], alone[192:]) < 2e-2, uid


def test_resume_after_interruption_loses_and_repeats_nothing(tmp_path, utts, encoder, reference, monkeypatch):
    out = tmp_path / "r.safetensors"
    calls = {"n": 0, "rows": 0}
    real = type(encoder).encode

    def flaky(self, feats, lengths):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["rows"] += feats.shape[0]
        return real(self, feats, lengths)

    monkeypatch.setattr(type(encoder), "encode", flaky)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle of a chunk: finished rows are kept
        extract(utts, out, cfg(batch_size=2, chunk_size=5, workers=0), encoder=encoder)
    assert not out.exists()
    chunks = sorted((work_dir(out) / "chunks").glob("*.safetensors"))
    assert chunks  # progress so far is on disk
    first_rows = calls["rows"]
    calls.update(n=-10**9, rows=0)
    res = extract(utts, out, cfg(batch_size=2, chunk_size=5, workers=0), encoder=encoder)
    assert res.resumed >= first_rows  # embedded rows (and the header rejects) were not redone
    assert calls["rows"] == GOOD - first_rows  # ... and everything else was done exactly once
    assert res.n_embedded == GOOD and res.n_rejected == len(BAD)
    assert_same_set(EmbeddingSet.load(out), reference[1])


def test_killed_cli_run_resumes_to_the_same_result(tmp_path, mixed, sb_models_root, run_cli):
    """A real SIGKILL in the middle of a run (full-size ECAPA, so there is time to kill it); the same command
    then finishes it."""
    out = tmp_path / "k.safetensors"
    args = ["extract", mixed, "-o", out, "--profile", "toucan-v3", "--encoder-dir", sb_models_root,
            "--batch-size", "1", "--chunk-size", "1", "--no-progress"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.Popen([sys.executable, "-m", "toucan_speakemb.cli", *map(str, args)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks = work_dir(out) / "chunks"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if chunks.is_dir() and len(list(chunks.glob("*.safetensors"))) >= 3:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    done_before = len(list(chunks.glob("*.safetensors")))
    assert not out.exists() and done_before >= 3

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed:" in r.stdout
    es = EmbeddingSet.load(out)
    assert len(es) == GOOD and len(set(es.utterance_ids)) == GOOD
    # the same as one uninterrupted run with these models
    ref_out = tmp_path / "ref.safetensors"
    dirs = parse_encoder_dirs([str(sb_models_root)], get_profile("toucan-v3"))
    extract(load_corpus(mixed)[1], ref_out, cfg(profile="toucan-v3", encoder_dirs=dirs))
    ref = EmbeddingSet.load(ref_out)
    assert es.utterance_ids == ref.utterance_ids and es.profile.name == "toucan-v3"
    assert rel_err(es.embeddings, ref.embeddings) < 1e-4


def test_shards_then_merge_equal_one_run(tmp_path, utts, encoder, reference):
    out = tmp_path / "all.safetensors"
    for k in (1, 2, 3):
        res = extract(utts, out, cfg(shard=(k, 3)), encoder=encoder)
        assert res.output == shard_output(out, k, 3) and res.output.exists()
    shards = [shard_output(out, k, 3) for k in (1, 2, 3)]
    with pytest.raises(SpeakEmbError, match="missing shard\\(s\\) 2 of 3"):
        merge([shards[0], shards[2]], out)
    m = merge(list(reversed(shards)), out, speaker_means=True)
    merged = EmbeddingSet.load(out)
    assert_same_set(merged, reference[1])
    assert "shard" not in merged.provenance
    assert m.n_rejected == len(BAD)
    with open(m.rejects) as f:
        assert {r["utterance_id"] for r in csv.DictReader(f)} == set(BAD)
    means = EmbeddingSet.load(speaker_means_path(out))
    assert len(means) == 3
    with pytest.raises(SpeakEmbError, match="exists; pass --overwrite"):
        merge(shards, out)


def test_merge_refuses_duplicates_and_other_profiles(tmp_path, reference):
    _, es = reference
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    es.save(a)
    es.subset(slice(0, 3)).save(b)
    with pytest.raises(SpeakEmbError, match="is in both"):
        merge([a, b], tmp_path / "m.safetensors")
    EmbeddingSet(es.embeddings[:3, :192], es.speaker_ids[:3], get_profile("toucan-v3"), ["x", "y", "z"]).save(b)
    with pytest.raises(SpeakEmbError, match="profile"):
        merge([a, b], tmp_path / "m.safetensors")


def test_torchrun_two_gloo_processes_give_one_merged_result(tmp_path, mixed, sb_small_root, reference):
    out = tmp_path / "dist.safetensors"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "toucan_speakemb.cli", "extract", str(mixed), "-o", str(out), "--encoder-dir",
           str(sb_small_root), "--device", "cpu", "--workers", "0", "--batch-size", "3", "--chunk-size", "2",
           "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("embedded 13 of 18") == 1  # rank 0 reports once
    assert_same_set(EmbeddingSet.load(out), reference[1])
    assert not work_dir(out).exists()


def test_speaker_means_and_attributes_from_a_manifest(tmp_path, utts, encoder):
    m = tmp_path / "m.csv"
    good = [u for u in utts if not u.utterance_id.startswith("bad/")]
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "speaker", "gender", "age", "accent"])
        for u in good:
            s = int(u.speaker_id[1])
            w.writerow([u.path, u.speaker_id, "fm"[s % 2], 20 + s, ["Irish", "Welsh", ""][s]])
    out = tmp_path / "m.safetensors"
    res = extract(load_corpus(m)[1], out, cfg(speaker_means=True), encoder=encoder)
    es = EmbeddingSet.load(out)
    assert es.gender[es.speaker_ids.index("s1")] == "m" and es.age[es.speaker_ids.index("s2")] == 22
    assert es.accent[es.speaker_ids.index("s0")] == "Irish"
    means = EmbeddingSet.load(res.speaker_means)
    for s, row in zip(means.speaker_ids, means.embeddings):
        assert np.allclose(row, es.embeddings[np.array(es.speaker_ids) == s].mean(0), atol=1e-5)
    assert means.provenance["level"] == "speaker-mean"


def test_v3_profile_is_ecapa_192_on_v3_preprocessing(tmp_path, utts, sb_small_root):
    enc = load_encoder("toucan-v3", parse_encoder_dirs([str(sb_small_root)], get_profile("toucan-v3")), "cpu")
    out = tmp_path / "v3.safetensors"
    good = [u for u in utts if not u.utterance_id.startswith("bad/")][:4]
    extract(good, out, cfg(), encoder=enc)
    es = EmbeddingSet.load(out)
    assert es.profile.name == "toucan-v3" and es.dim == 192 and len(es) == 4
    w = load_and_preprocess(good[0].path, "toucan-v3")
    assert rel_err(es.embeddings[0], enc.encode(w.unsqueeze(0), torch.tensor([len(w)]))[0]) < 1e-4


def test_existing_output_and_foreign_work_folder_are_refused(tmp_path, utts, encoder):
    good = [u for u in utts if not u.utterance_id.startswith("bad/")][:3]
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"x")
    with pytest.raises(SpeakEmbError, match="exists; pass --overwrite"):
        extract(good, out, cfg(), encoder=encoder)
    extract(good, out, cfg(overwrite=True, keep_work=True), encoder=encoder)
    assert work_dir(out).is_dir() and len(EmbeddingSet.load(out)) == 3
    with pytest.raises(SpeakEmbError, match="belongs to a different extraction.*min_seconds"):
        extract(good, out, cfg(min_seconds=1.0), encoder=encoder)
    with pytest.raises(SpeakEmbError, match="belongs to a different extraction.*corpus"):
        extract(good[:2], out, cfg(), encoder=encoder)


def test_cli_help_and_argument_errors(run_cli, tmp_path, speech_folder):
    r = run_cli("extract", "--help")
    assert r.returncode == 0
    for word in ("resume", "--shard", "torchrun", "rejects", "--encoder-dir", "LibriSpeech", "VCTK", "manifest"):
        assert word in r.stdout, word
    assert run_cli("merge", "--help").returncode == 0
    r = run_cli("extract", speech_folder, "-o", tmp_path / "x.safetensors", "--shard", "4/3")
    assert r.returncode == 2 and "1 <= K <= N" in r.stderr
    r = run_cli("extract", speech_folder, "-o", tmp_path / "x.safetensors", "--profile", "toucan-native")
    assert r.stderr.strip().splitlines()[-1] == assert_one_error_line(r, "--toucan-dir")
    r = run_cli("extract", speech_folder, "-o", tmp_path / "x.safetensors", "--shard", "1/2", "--speaker-means")
    assert r.returncode == 1 and "merge" in r.stderr
