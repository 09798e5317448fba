"""Every command refuses bad input with one line before any work starts, and writes its outputs by one rule:
the extension matches what is written, an existing file is replaced only with --overwrite, the folder must
exist (or is made where the help says so), and nothing half-written is ever left behind."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from test_cli import TINY, assert_error, invoke, make_set, work  # noqa: F401 (work: a fixture)
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import StreamedNpy, load_tensors
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices import bank as bank_module
from toucan_speakemb.voices.bank import MAX_BANK_VOICES, SamplingPlan, VoiceBank


@pytest.fixture(scope="module")
def run(work):
    """A tiny trained generator (test_cli's) and its training set."""
    _, data, gen = work
    return gen, data


def snapshot(folder: Path):
    """Every file under ``folder`` with its bytes: what a refused command must leave as it was."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- profiles are checked by the registry -----------------------------------------------------------------

def test_train_refuses_an_unknown_profile_before_making_the_run_folder(tmp_path):
    data = make_set().save(tmp_path / "d.npz")
    line = assert_error(invoke("train", "--data", data, "--out", tmp_path / "r", "--profile", "bogus", *TINY),
                        "bogus", "unknown profile", "toucan-v2.2")
    assert "custom-<name>" in line
    assert not (tmp_path / "r").exists()


def test_train_refuses_a_speaker_whose_mean_embedding_is_all_zero_before_making_the_run_folder(tmp_path):
    es = make_set()
    es.embeddings[4:6] = 0  # both utterances of speaker s2: its mean has no direction to measure novelty by
    line = assert_error(invoke("train", "--data", es.save(tmp_path / "d.npz"), "--out", tmp_path / "r", *TINY),
                        "all-zero mean", "'s2'")
    assert "1 speaker(s)" in line
    assert not (tmp_path / "r").exists()


def test_evaluate_refuses_an_unknown_profile(tmp_path, run):
    _, data = run
    assert_error(invoke("evaluate", "--real", data, "--generated", data, "--out", tmp_path / "rep",
                        "--profile", "bogus"), "bogus", "unknown profile")
    assert not (tmp_path / "rep").exists()


def test_a_builtin_set_asked_for_in_another_profile_is_refused(tmp_path):
    assert_error(invoke("train", "--data", "builtin:synthetic-small", "--profile", "toucan-v3",
                        "--out", tmp_path / "r", *TINY), "toucan-v3")
    assert not (tmp_path / "r").exists()


# ---- sample: counts, memory, streaming ----------------------------------------------------------------------

def test_sample_refuses_a_count_above_the_maximum_at_once(tmp_path, run):
    gen, _ = run
    out = tmp_path / "v.safetensors"
    assert_error(invoke("sample", "--generator", gen, "-n", 1_000_000_000, "--out", out), "1,000,000", "-n")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sample_refuses_a_count_whose_ids_do_not_fit_in_memory(tmp_path, run, monkeypatch):
    gen, _ = run
    monkeypatch.setattr(bank_module, "available_memory", lambda: 10 * 2**20)
    assert_error(invoke("sample", "--generator", gen, "-n", MAX_BANK_VOICES, "--out", tmp_path / "v.safetensors"),
                 "MB of memory")
    assert list(tmp_path.iterdir()) == []


def test_sample_streams_chunks_to_disk_into_the_same_bank(tmp_path, run, capsys):
    gen = Generator.load(run[0])
    plan = SamplingPlan(gen, 10, 5)
    plan.write(tmp_path / "v.safetensors", tmp_path / "v.npy", chunk=3, progress=True)
    assert "sampling" in capsys.readouterr().err  # a progress bar when there is more than one chunk
    streamed = VoiceBank.load(tmp_path / "v.safetensors")
    whole = VoiceBank.from_generator(gen, 10, 5)
    assert streamed.ids == whole.ids and np.array_equal(streamed.seeds, whole.seeds)
    assert streamed.provenance["bank_seed"] == 5 and streamed.profile == whole.profile
    # equal up to the float rounding of batch sizes (bit-for-bit batch independence is the generator's part)
    np.testing.assert_allclose(streamed.embeddings, whole.embeddings, rtol=0, atol=1e-5)
    assert np.array_equal(np.load(tmp_path / "v.npy"), streamed.embeddings)


def test_a_stream_that_fails_midway_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with StreamedNpy(tmp_path / "a.npy", (4, 2), np.float32) as f:
            f.rows(np.zeros((2, 2), np.float32))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_sample_refuses_a_folder_that_does_not_exist_and_does_not_make_it(tmp_path, run):
    gen, _ = run
    out = tmp_path / "nonexistent_dir" / "v.safetensors"
    assert_error(invoke("sample", "--generator", gen, "-n", 2, "--out", out), "does not exist")
    assert not out.parent.exists()


def test_sample_refuses_to_replace_a_bank_without_overwrite(tmp_path, run):
    gen, _ = run
    out = tmp_path / "v.safetensors"
    assert invoke("sample", "--generator", gen, "-n", 2, "--seed", 1, "--out", out).exit_code == 0
    before = out.read_bytes()
    assert_error(invoke("sample", "--generator", gen, "-n", 3, "--seed", 2, "--out", out), "exists", "--overwrite")
    assert out.read_bytes() == before
    r = invoke("sample", "--generator", gen, "-n", 3, "--seed", 2, "--out", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert len(VoiceBank.load(out)) == 3


@pytest.mark.parametrize("args, words", [
    (["--out", "v.npy"], ["v.npy", ".safetensors"]),
    (["--out", "v.safetensors", "--npy", "v.txt"], ["v.txt", ".npy"]),
    (["--out", "v.safetensors", "--npy", "v.safetensors.npy", "--steps", "999"], ["999"]),
])
def test_sample_refuses_names_that_do_not_match_what_is_written(tmp_path, run, args, words):
    gen, _ = run
    args = [tmp_path / a if a.startswith("v.") else a for a in args]
    assert_error(invoke("sample", "--generator", gen, "-n", 2, *args), *words)
    assert list(tmp_path.iterdir()) == []


def test_logging_options_work_after_the_sub_command(tmp_path, run):
    gen, _ = run
    r = invoke("sample", "--generator", gen, "-n", 2, "--out", tmp_path / "v.safetensors", "-q")
    assert r.exit_code == 0, r.output
    assert logging.getLogger().level == logging.WARNING
    r = invoke("sample", "--generator", gen, "-n", 2, "--out", tmp_path / "w.safetensors", "-vv")
    assert r.exit_code == 0, r.output
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger().setLevel(logging.WARNING)


# ---- extract, merge, voices export ---------------------------------------------------------------------------

def test_extract_refuses_an_output_name_that_is_not_an_embedding_set_before_reading_the_corpus(tmp_path):
    # the corpus does not even exist: the output is checked first
    assert_error(invoke("extract", tmp_path / "no-corpus", "-o", tmp_path / "x.txt"), "x.txt", ".safetensors")
    assert list(tmp_path.iterdir()) == []


def test_extract_refuses_an_existing_rejects_file_without_overwrite(tmp_path):
    (tmp_path / "emb.rejects.csv").write_text("keep me")
    assert_error(invoke("extract", tmp_path / "no-corpus", "-o", tmp_path / "emb.safetensors"),
                 "emb.rejects.csv", "--overwrite")
    assert (tmp_path / "emb.rejects.csv").read_text() == "keep me"


def test_merge_refuses_a_missing_folder_and_a_wrong_extension(tmp_path, run):
    _, data = run
    assert_error(invoke("merge", data, "-o", tmp_path / "new" / "m.safetensors"), "does not exist")
    assert_error(invoke("merge", data, "-o", tmp_path / "m.csv"), "m.csv")
    assert list(tmp_path.iterdir()) == []


def test_voices_export_refuses_to_replace_a_file_without_overwrite(tmp_path, run):
    gen, _ = run
    bank = tmp_path / "v.safetensors"
    assert invoke("sample", "--generator", gen, "-n", 2, "--out", bank).exit_code == 0
    out = tmp_path / "v.csv"
    out.write_text("precious")
    assert_error(invoke("voices", "export", bank, "-o", out), "exists", "--overwrite")
    assert out.read_text() == "precious"
    assert invoke("voices", "export", bank, "-o", out, "--overwrite").exit_code == 0
    assert out.read_text().startswith("voice_id")
    assert_error(invoke("voices", "export", bank, "-o", tmp_path / "v.wav"), ".npy")


def test_synth_refuses_to_replace_a_wav_or_its_sidecar_without_overwrite(tmp_path, run):
    gen, _ = run
    wav = tmp_path / "hello.wav"
    wav.write_bytes(b"precious")
    assert_error(invoke("synth", "Hi.", "--random-speaker", "--generator", gen, "-o", wav), "exists", "--overwrite")
    assert wav.read_bytes() == b"precious"
    # several utterances: every numbered wav and sidecar is checked before anything is said
    (tmp_path / "line_002.json").write_text("{}")
    assert_error(invoke("synth", "One.", "Two.", "--random-speaker", "--generator", gen, "-o", tmp_path / "line.wav"),
                 "line_002.json", "exists")
    assert_error(invoke("synth", "Hi.", "--random-speaker", "--generator", gen, "-o", tmp_path / "hi.mp3"),
                 "hi.mp3", ".wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.wav", "line_002.json"]


def test_a_voice_bank_is_named_safetensors(tmp_path, run):
    gen, _ = run
    assert_error(invoke("voices", "add", tmp_path / "bank.npy", "--generator", gen, "-n", 1), "bank.npy",
                 ".safetensors")
    assert_error(invoke("synth", "Hi.", "--random-speaker", "--generator", gen, "--bank", tmp_path / "b.npz",
                        "-o", tmp_path / "hi.wav"), "b.npz", ".safetensors")
    assert list(tmp_path.iterdir()) == []


# ---- folders of outputs -----------------------------------------------------------------------------------

def test_evaluate_refuses_a_report_folder_holding_a_report_and_says_nothing_of_pickles(tmp_path, run):
    _, data = run
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.md").write_text("old report")
    line = assert_error(invoke("evaluate", "--real", data, "--generated", data, "--out", rep, "--no-tsne"),
                        "report.md", "--overwrite")
    assert (rep / "report.md").read_text() == "old report" and line
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(np.random.default_rng(0).bytes(400))
    line = assert_error(invoke("evaluate", "--real", data, "--generated", corrupt, "--out", tmp_path / "r2"),
                        "corrupt.npy")
    assert "pickle" not in line.lower()
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    line = assert_error(invoke("evaluate", "--real", data, "--generated", obj, "--out", tmp_path / "r3"), "obj.npy")
    assert "allow_pickle" not in line


def test_listening_commands_refuse_to_replace_their_outputs_without_overwrite(tmp_path):
    out = tmp_path / "test"
    out.mkdir()
    (out / "test.json").write_text("{}")
    assert_error(invoke("export-listening-test", "--audio", tmp_path / "none", "--out", out), "test.json",
                 "--overwrite")
    assert_error(invoke("export-listening-test", "--audio", tmp_path / "none", "--out", tmp_path / "a" / "b"),
                 "does not exist")
    res = tmp_path / "res"
    res.mkdir()
    (res / "results.json").write_text("{}")
    assert_error(invoke("listening-results", tmp_path / "answers.json", "--out", res), "results.json")
    assert snapshot(tmp_path) == {out / "test.json": b"{}", res / "results.json": b"{}"}


def test_the_batch_recipe_refuses_a_folder_of_other_files_before_loading_anything(tmp_path):
    from toucan_speakemb.adapters.batch_voices import BatchConfig, run_batch

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    cfg = BatchConfig(generator=str(tmp_path / "no-generator"), sentences=str(tmp_path / "none.txt"), out=str(out))
    with pytest.raises(SpeakEmbError, match="other files"):
        run_batch(cfg)
    cfg.out = str(tmp_path / "a" / "b")
    with pytest.raises(SpeakEmbError, match="does not exist"):
        run_batch(cfg)
    assert snapshot(tmp_path) == {out / "notes.txt": b"mine"}


# ---- run summaries ---------------------------------------------------------------------------------------

def test_the_run_summary_names_the_data_file_it_trained_on(run):
    gen, data = run
    summary = json.loads((gen / "summary.json").read_text())
    assert summary["data"] == str(Path(data).resolve())


# ---- the model hub, offline -------------------------------------------------------------------------------

@pytest.fixture
def hub_unreachable(monkeypatch):
    """No network: every connection fails at once, and the hub client would retry if it were asked."""
    import socket

    from toucan_speakemb.extract import encoders

    tries = []

    def refuse(*a, **k):
        tries.append(a)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(encoders, "_HUB_STATE", None)
    monkeypatch.setattr(encoders, "_WARNED", set())
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tries


def test_an_unreachable_hub_is_tried_once_and_fails_fast_without_a_cached_model(tmp_path, hub_unreachable):
    import time

    import speechbrain.inference  # noqa: F401  (imported before the clock starts: a loaded machine takes seconds)

    from toucan_speakemb.extract.encoders import SpeechBrainEncoder

    t0 = time.monotonic()
    for _ in range(2):  # ecapa and x-vector of one run: the hub is asked once
        with pytest.raises(SpeakEmbError, match="Network is unreachable.*not in the cache.*--encoder-dir"):
            SpeechBrainEncoder("ecapa", "speechbrain/spkrec-ecapa-voxceleb", False, cache_dir=tmp_path)
    # the hub client's own five retries with back-off took about 30 s
    assert len(hub_unreachable) == 1 and time.monotonic() - t0 < 10


def test_an_unreachable_hub_uses_the_cached_model_with_one_warning(tmp_path, hub_unreachable, caplog, sb_small_root):
    import shutil

    from toucan_speakemb.extract.encoders import SpeechBrainEncoder

    cached = tmp_path / "speechbrain" / "speechbrain--spkrec-ecapa-voxceleb"
    shutil.copytree(sb_small_root / "spkrec-ecapa-voxceleb", cached)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            enc = SpeechBrainEncoder("ecapa", "speechbrain/spkrec-ecapa-voxceleb", False, cache_dir=tmp_path)
    assert enc.dim == 192 and enc.identity() == {"source": "speechbrain/spkrec-ecapa-voxceleb"}
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and len(hub_unreachable) == 1


# ---- a killed extract leaves no worker behind -----------------------------------------------------------------

def _children(pid: int):
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_decoding_worker_of_a_killed_extract_dies_with_it(tmp_path, sb_small_root):
    import os
    import signal
    import subprocess
    import sys
    import time

    import soundfile as sf

    rng = np.random.default_rng(0)
    (tmp_path / "corpus" / "spk").mkdir(parents=True)
    for i in range(200):
        sf.write(tmp_path / "corpus" / "spk" / f"u{i}.wav", (0.1 * rng.normal(size=48000)).astype(np.float32), 16000)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "toucan_speakemb.cli", "extract", tmp_path / "corpus", "-o",
                          tmp_path / "e.safetensors", "--profile", "toucan-v3", "--encoder-dir",
                          sb_small_root / "spkrec-ecapa-voxceleb", "--workers", "1", "--no-progress"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers = []
        while not workers and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            workers = _children(p.pid)
        assert workers, "the extraction never started a decoding worker"
        # the parent stops taking batches, so the worker fills its queue and waits (PyTorch's own check of its
        # parent runs every 5 s); then the parent is killed
        p.send_signal(signal.SIGSTOP)
        time.sleep(1.0)
        p.send_signal(signal.SIGKILL)
        p.wait()
        time.sleep(0.5)
        alive = [w for w in workers if Path(f"/proc/{w}").exists()
                 and Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        assert alive == []
    finally:
        p.kill()
        for w in _children(p.pid):
            os.kill(w, signal.SIGKILL)


# ---- extraction is reproducible run to run ----------------------------------------------------------------------

def test_extraction_on_cpu_is_bit_for_bit_reproducible_run_to_run_and_after_a_resume(tmp_path, sb_small_root):
    """SpeechBrain's x-vector pooling adds random noise on every call; it is drawn from a generator seeded
    alike on every call, so an utterance's embedding depends on its audio alone (same thread count)."""
    import soundfile as sf
    import torch

    from toucan_speakemb.extract.corpora import load_corpus
    from toucan_speakemb.extract.encoders import load_encoder
    from toucan_speakemb.extract.pipeline import ExtractConfig, extract
    from toucan_speakemb.core.embedding_set import EmbeddingSet

    rng = np.random.default_rng(3)
    for s in range(2):
        (tmp_path / "c" / f"s{s}").mkdir(parents=True)
        for i in range(3):
            n = int(rng.uniform(1, 2.5) * 16000)
            wave = 0.3 * np.sin(2 * np.pi * (110 + 50 * s) * np.arange(n) / 16000) + 0.05 * rng.normal(size=n)
            sf.write(tmp_path / "c" / f"s{s}" / f"u{i}.wav", wave.astype(np.float32), 16000)
    utts = load_corpus(tmp_path / "c")[1]
    enc = load_encoder("toucan-v2.2", {"ecapa": sb_small_root / "spkrec-ecapa-voxceleb",
                                       "xvector": sb_small_root / "spkrec-xvect-voxceleb"}, "cpu")
    runs = []
    for k, chunk in enumerate((512, 2, 1)):  # chunk files of other sizes: as after a resume
        torch.manual_seed(100 + k)  # another global random state each time
        cfg = ExtractConfig(workers=0, progress=False, batch_size=1, chunk_size=chunk)
        runs.append(EmbeddingSet.load(extract(utts, tmp_path / f"r{k}.safetensors", cfg, encoder=enc).output))
    for other in runs[1:]:
        assert other.utterance_ids == runs[0].utterance_ids
        assert np.array_equal(other.embeddings, runs[0].embeddings)
    state = torch.random.get_rng_state()
    enc.encoders[1]._encode_single(torch.zeros(16000))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left as it was


def test_extract_without_the_hub_or_a_device_says_one_line_before_reading_the_corpus(tmp_path, run_cli,
                                                                                     speech_folder):
    import torch

    r = run_cli("extract", speech_folder, "-o", tmp_path / "x.safetensors", "--no-progress",
                env={"HF_HUB_OFFLINE": "1", "TOUCAN_SPEAKEMB_CACHE": str(tmp_path / "c")})
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: could not get"), r.stderr
    if not torch.cuda.is_available():
        r = run_cli("extract", speech_folder, "-o", tmp_path / "x.safetensors", "--device", "cuda")
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 1 and len(lines) == 1 and "cuda" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []
