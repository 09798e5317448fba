"""export-listening-test: how stimuli, systems and voices are found, what the test folder holds, the webMUSHRA
configuration, and bad input (one error line, exit 1)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner

from conftest import assert_one_error_line as assert_error, speak, write_audio
from listening_helpers import make_audio_tree
from toucan_speakemb.cli.main import main
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.listening import export_listening_test, load_manifest
from toucan_speakemb.listening.design import presentation_order
from toucan_speakemb.listening.stimuli import collect_stimuli


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_audio_tree(tmp_path_factory.mktemp("tree"), systems=("generated", "baseline_gaussian"), voices=2, utts=2)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --- where systems and voices come from ----------------------------------------------------------------------

def test_systems_are_sub_folders_and_voices_come_from_file_names(tree):
    audio, real = tree
    stimuli = collect_stimuli(audio, real)
    assert Counter(s.system for s in stimuli) == {"generated": 4, "baseline_gaussian": 4, "reference": 4}
    assert {s.voice for s in stimuli if s.system == "generated"} == {"v0", "v1"}
    assert {s.voice for s in stimuli if s.is_reference} == {"r0", "r1"}
    assert {s.id for s in stimuli} >= {"generated/v0_u1", "reference/r1_u0"}


def test_sidecars_and_metadata_csv_override_folders_and_names(tmp_path):
    flat = tmp_path / "batch_out"
    for name in ("a.wav", "b.wav", "c.wav"):
        speak(flat / name, "hello", speed=260)
    (flat / "metadata.csv").write_text("file,voice_id,seed,text,system\na.wav,3f2a-7,7,hello,diffusion\n"
                                       "b.wav,3f2a-8,8,hello,diffusion\n")
    (flat / "c.json").write_text(json.dumps({"voice_id": "side-1", "text": "hello"}))
    by_item = {s.item: s for s in collect_stimuli(flat)}
    assert (by_item["a"].system, by_item["a"].voice, by_item["a"].text) == ("diffusion", "3f2a-7", "hello")
    assert (by_item["c"].system, by_item["c"].voice) == ("batch_out", "side-1")  # files directly in the folder

    nested = tmp_path / "nested"
    speak(nested / "generated" / "voice-17" / "utt_3.wav", "hello", speed=260)
    (s,) = collect_stimuli(nested)
    assert (s.system, s.voice, s.id) == ("generated", "voice-17", "generated/utt_3")


# --- what the test folder holds --------------------------------------------------------------------------------

def test_the_page_is_self_contained_and_carries_the_test(tree, tmp_path):
    audio, real = tree
    t = export_listening_test(audio, tmp_path / "out", kind="mos", reference_dir=real, seed=3, progress=False)
    html = t.page.read_text()
    assert "http://" not in html and "https://" not in html  # nothing is fetched from a network
    data = json.loads(html.split('id="test-data" type="application/json">')[1].split("</script>")[0])
    manifest = load_manifest(t.out)
    assert data["test_id"] == manifest["test_id"] == t.test_id and data["seed"] == 3
    assert len(data["trials"]) == len(manifest["trials"]) == 12  # one mos trial per stimulus, references included
    assert all(s["src"].startswith("data:audio/wav;base64,") for s in data["stimuli"].values())
    assert "source" not in json.dumps(data["stimuli"])  # the page does not reveal where files came from
    for sid, s in manifest["stimuli"].items():
        info = sf.info(str(t.out / s["file"]))
        assert (info.samplerate, info.channels, info.subtype) == (t.sample_rate, 1, "PCM_16")
    # same input and seed: same test id; another seed: another test
    again = export_listening_test(audio, tmp_path / "again", kind="mos", reference_dir=real, seed=3, progress=False)
    other = export_listening_test(audio, tmp_path / "other", kind="mos", reference_dir=real, seed=4, progress=False)
    assert again.test_id == t.test_id != other.test_id


def test_ab_speaker_pairs_carry_their_ground_truth(tree, tmp_path):
    audio, real = tree
    t = export_listening_test(audio, tmp_path / "ab", kind="ab-speaker", reference_dir=real, seed=0,
                              pairs_per_type=3, progress=False)
    m = load_manifest(t.out)
    voice = {sid: s["voice"] for sid, s in m["stimuli"].items()}
    system = {sid: s["system"] for sid, s in m["stimuli"].items()}
    kinds = Counter((tr["system"], tr["pair_type"]) for tr in m["trials"])
    # 2 voices x 2 utterances: 2 same-voice pairs exist per system, 4 different-voice pairs, 16 vs reference
    assert kinds == {(s, p): n for s in ("generated", "baseline_gaussian") for p, n in
                     (("same", 2), ("different", 3), ("vs-reference", 3))} | {("reference", "same"): 2,
                                                                              ("reference", "different"): 3}
    for tr in m["trials"]:
        a, b = tr["stimuli"]
        assert a != b
        assert tr["truth"] == ("same" if voice[a] == voice[b] and system[a] == system[b] else "different")
        if tr["pair_type"] == "vs-reference":
            assert sorted([system[a], system[b]]) == sorted([tr["system"], "reference"])
        else:
            assert system[a] == system[b] == tr["system"]


def test_presentation_order_is_a_seeded_permutation_per_listener():
    a = presentation_order(7, "ana", 40)
    assert sorted(a) == list(range(40)) and a != list(range(40))
    assert a == presentation_order(7, "ana", 40)
    assert a != presentation_order(7, "bo", 40) and a != presentation_order(8, "ana", 40)


# --- webMUSHRA ---------------------------------------------------------------------------------------------------

def _pages(config):
    intro, group, finish = config["pages"]
    assert intro["type"] == "generic" and finish["type"] == "finish" and group[0] == "random"
    return group[1:]


@pytest.mark.parametrize("kind", ["mos", "mushra", "ab-speaker"])
def test_webmushra_config_follows_its_format_and_names_files_that_exist(tree, tmp_path, kind):
    audio, real = tree
    t = export_listening_test(audio, tmp_path / "o", kind=kind, reference_dir=real, pairs_per_type=2, progress=False)
    root = t.out / "webmushra"
    config = yaml.safe_load((root / "configs" / f"{t.test_id}.yaml").read_text())
    assert config["testId"] == t.test_id and config["bufferSize"] in (256, 512, 1024, 2048, 4096, 8192, 16384)
    pages = _pages(config)
    trials = load_manifest(t.out)["trials"]
    assert [p["id"] for p in pages] == [tr["id"] for tr in trials]
    for p, tr in zip(pages, trials):
        files = ([p["reference"]] if "reference" in p else []) + list(p["stimuli"].values())
        for f in files:
            assert f.startswith(f"configs/resources/audio/{t.test_id}/") and (root / f).is_file(), f
        if kind == "mos":
            assert p["type"] == "likert_single_stimulus" and [r["value"] for r in p["response"]] == [1, 2, 3, 4, 5]
            assert list(p["stimuli"]) == [tr["stimuli"][0].replace("/", "__")]
        elif kind == "mushra":
            assert p["type"] == "mushra" and len(p["stimuli"]) == 2  # the reference is added by webMUSHRA itself
            lengths = {sf.info(str(root / f)).frames for f in files}
            assert len(lengths) == 1  # conditions of a page are padded to one length
        else:
            (key, f), = p["stimuli"].items()
            assert key == f"{tr['id']}__{tr['pair_type']}__{tr['truth']}"
            seconds = [load_manifest(t.out)["stimuli"][s]["seconds"] for s in tr["stimuli"]]
            assert sf.info(str(root / f)).duration == pytest.approx(sum(seconds) + 0.7, abs=0.01)


# --- bad input ------------------------------------------------------------------------------------------------

def test_mixed_sample_rates_are_resampled_for_the_test_and_said(tmp_path, run_cli):
    for system in ("generated", "baseline"):
        folder = tmp_path / "mixed" / system
        speak(folder / "a_1.wav", "one two", speed=240)
        speak(folder / "a_2.wav", "three four", speed=240)
        wave, sr = sf.read(str(folder / "a_1.wav"))
        write_audio(folder / "b_1.wav", wave[::2], sr // 2)  # 11025 Hz, half as many samples
    r = run_cli("export-listening-test", "--audio", tmp_path / "mixed", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    # each file named by its stimulus id: the bare file name b_1.wav is in both systems
    assert "resampled 2 of 6 files to 22050 Hz" in r.stderr
    assert "generated/b_1 (11025 Hz)" in r.stderr and "baseline/b_1 (11025 Hz)" in r.stderr
    assert "lose their band" not in r.stderr  # upsampled only
    out = sf.read(str(tmp_path / "out" / "audio" / "generated" / "b_1.wav"))
    assert out[1] == 22050 and abs(len(out[0]) - 2 * len(wave[::2])) <= 2
    assert "resampled 2 of 6" in json.dumps(load_manifest(tmp_path / "out")["notes"])

    r = invoke("export-listening-test", "--audio", tmp_path / "mixed", "--out", tmp_path / "low",
               "--sample-rate", 11025, "--no-webmushra")
    assert r.exit_code == 0, r.output
    notes = load_manifest(tmp_path / "low")["notes"]
    assert "4 of them lose their band above 5512 Hz; --sample-rate 22050 keeps it" in notes, notes
    assert_error(invoke("export-listening-test", "--audio", tmp_path / "mixed", "--out", tmp_path / "zero",
                        "--sample-rate", 0), "sample rate 0 Hz is outside 8000-192000 Hz")


def test_of_equally_common_sample_rates_the_highest_is_kept():
    from pathlib import Path

    from toucan_speakemb.listening.stimuli import Stimulus, common_sample_rate

    def stim(sr):
        return Stimulus(system="s", item="x", path=Path("x.wav"), sample_rate=sr, frames=sr, channels=1)

    assert common_sample_rate([stim(8000), stim(44100)]) == 44100
    assert common_sample_rate([stim(44100), stim(8000), stim(16000), stim(16000)]) == 16000


@pytest.mark.parametrize("case, words", [
    ("missing", ["audio folder not found"]),
    ("empty", ["holds no audio files", "0 other files"]),
    ("text only", ["holds no audio files", "2 other files"]),
    ("not audio", ["unreadable audio file", "fake.wav"]),
    ("same name two formats", ["duplicate file names", "generated/a_1", "a_1.wav", "a_1.flac"]),
    ("same name two folders", ["duplicate file names", "x/a_1.wav", "y/a_1.wav"]),
    ("system named reference", ["named 'reference'"]),
    ("mushra without reference", ["needs real recordings", "--reference"]),
    ("ab-speaker without voices", ["needs each file's voice", "solo.wav"]),
])
def test_bad_input_is_one_error_line(tmp_path, case, words):
    audio, extra = tmp_path / "audio", []
    good = tmp_path / "good.wav"
    speak(good, "one", speed=260)
    put = lambda rel: (audio / rel).parent.mkdir(parents=True, exist_ok=True) or (audio / rel).write_bytes(good.read_bytes())
    if case == "empty":
        audio.mkdir()
    elif case == "text only":
        audio.mkdir()
        (audio / "notes.txt").write_text("x")
        (audio / "metadata.csv").write_text("file\n")
    elif case == "not audio":
        put("generated/a_1.wav")
        (audio / "generated" / "fake.wav").write_text("this is not a wav file")
    elif case == "same name two formats":
        put("generated/a_1.wav")
        sf.write(str(audio / "generated" / "a_1.flac"), np.zeros(8000), 16000)
    elif case == "same name two folders":
        put("generated/x/a_1.wav")
        put("generated/y/a_1.wav")
    elif case == "system named reference":
        put("reference/a_1.wav")
        speak(tmp_path / "real" / "r_1.wav", "one", speed=260)
        extra = ["--reference", tmp_path / "real"]
    elif case == "mushra without reference":
        put("generated/a_1.wav")
        put("baseline/a_1.wav")
        extra = ["--kind", "mushra"]
    elif case == "ab-speaker without voices":
        put("generated/solo.wav")
        put("generated/a_1.wav")
        extra = ["--kind", "ab-speaker"]
    r = invoke("export-listening-test", "--audio", audio, "--out", tmp_path / "out", *extra)
    assert_error(r, *words)
    assert not (tmp_path / "out" / "test.json").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**53 + 1)])
def test_seeds_outside_the_pages_32_bits_are_refused(tree, tmp_path, seed):
    r = invoke("export-listening-test", "--audio", tree[0], "--out", tmp_path / "out", "--seed", seed)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "'--seed'" in r.stderr and "0<=x<=4294967295" in r.stderr, r.stderr
    with pytest.raises(SpeakEmbError, match="seed must be a whole number from 0 to 4294967295"):
        export_listening_test(tree[0], tmp_path / "out", seed=int(seed), progress=False)
    assert not (tmp_path / "out").exists()


def test_the_largest_seed_makes_a_test(tree, tmp_path):
    r = invoke("export-listening-test", "--audio", tree[0], "--out", tmp_path / "out", "--seed", 2**32 - 1,
               "--max-per-system", 1, "--no-webmushra")
    assert r.exit_code == 0, r.output
    assert load_manifest(tmp_path / "out")["seed"] == 2**32 - 1


def test_a_new_export_into_an_old_test_folder_keeps_only_its_own_audio(tree, tmp_path):
    audio, real = tree
    export_listening_test(audio, tmp_path / "o", kind="mos", reference_dir=real, progress=False)
    (tmp_path / "o" / "audio" / "mine.txt").write_text("a file the user put there")
    t = export_listening_test(audio, tmp_path / "o", kind="mos", progress=False)  # no reference this time
    files = {p.relative_to(t.out).as_posix() for p in (t.out / "audio").rglob("*.wav")}
    assert files == {s["file"] for s in load_manifest(t.out)["stimuli"].values()}
    assert not any(f.startswith("audio/reference/") for f in files)
    assert (tmp_path / "o" / "audio" / "mine.txt").exists()


def test_output_that_is_a_file_is_refused(tree, tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(SpeakEmbError, match="is a file"):
        export_listening_test(tree[0], tmp_path / "out", progress=False)
