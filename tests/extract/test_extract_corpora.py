"""Corpus layouts -> utterance records with speaker ids and attributes (no audio is decoded here)."""

import math

import pytest

from toucan_speakemb.extract.corpora import load_corpus
from toucan_speakemb.core.errors import SpeakEmbError


def touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")
    return p


def test_librispeech_layout_with_gender_from_speakers_txt(tmp_path):
    root = tmp_path / "LibriSpeech"
    (root).mkdir()
    (root / "SPEAKERS.TXT").write_text(
        "; Some comment lines\n;ID  |SEX| SUBSET           |MINUTES| NAME\n"
        "19   | F | train-clean-100  | 25.19 | Kara Shallenberg\n"
        "26   | M | train-clean-100  | 25.08 | Denny Sayers\n")
    for spk, ch in (("19", "198"), ("26", "495")):
        for u in range(2):
            touch(root / "train-clean-100" / spk / ch / f"{spk}-{ch}-{u:04d}.flac")
    touch(root / "train-clean-100" / "19" / "198" / "19-198.trans.txt")
    for where in (root, root / "train-clean-100"):  # the corpus root or one subset
        kind, utts = load_corpus(where)
        assert kind == "librispeech"
        assert [u.utterance_id for u in utts] == ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001"]
        assert [u.speaker_id for u in utts] == ["19", "19", "26", "26"]
        assert [u.gender for u in utts] == ["f", "f", "m", "m"]


@pytest.mark.parametrize("version", ["0.92", "0.80"])
def test_vctk_layout_with_age_gender_accent(tmp_path, version):
    root = tmp_path / "VCTK"
    info = ("ID  AGE  GENDER  ACCENTS  REGION COMMENTS\n"
            "p225  23  F    English    Southern  England\n"
            "p226  22  M    English    Surrey\n"
            "p280  25  F    France     \n")
    if version == "0.80":
        info = info.replace("p2", "2")
    touch(root / "speaker-info.txt").write_text(info)
    for spk in ("p225", "p226", "p280"):
        for u in (1, 2):
            if version == "0.92":
                for mic in (1, 2):
                    touch(root / "wav48_silence_trimmed" / spk / f"{spk}_{u:03d}_mic{mic}.flac")
            else:
                touch(root / "wav48" / spk / f"{spk}_{u:03d}.wav")
    kind, utts = load_corpus(root)
    assert kind == "vctk"
    assert len(utts) == 6  # one microphone of two
    assert all(u.path.endswith("_mic1.flac") for u in utts) or version == "0.80"
    by = {u.utterance_id: u for u in utts}
    assert by["p225_001"].gender == "f" and by["p225_001"].age == 23 and by["p225_001"].accent == "English"
    assert by["p226_002"].gender == "m" and by["p226_002"].speaker_id == "p226"
    assert by["p280_001"].accent == "France"
    if version == "0.92":
        _, utts2 = load_corpus(root, vctk_mic="mic2")
        assert all(u.path.endswith("_mic2.flac") for u in utts2)


def test_folder_speaker_is_parent_folder_or_regex(tmp_path):
    root = tmp_path / "clips"
    touch(root / "alice" / "a1.wav")
    touch(root / "alice" / "sub" / "a2.flac")
    touch(root / "bob" / "b1.ogg")
    touch(root / "bob" / "notes.txt")
    kind, utts = load_corpus(root)
    assert kind == "folder"
    assert [(u.utterance_id, u.speaker_id) for u in utts] == [
        ("alice/a1", "alice"), ("alice/sub/a2", "sub"), ("bob/b1", "bob")]
    _, utts = load_corpus(root, speaker_regex=r"^(?P<speaker>[^/]+)/")
    assert [u.speaker_id for u in utts] == ["alice", "alice", "bob"]
    assert all(u.gender == "" and math.isnan(u.age) for u in utts)


def test_folder_errors_are_one_line(tmp_path):
    root = tmp_path / "flat"
    touch(root / "x.wav")
    with pytest.raises(SpeakEmbError, match="no speaker folder"):
        load_corpus(root)
    with pytest.raises(SpeakEmbError, match="has no group"):
        load_corpus(root, speaker_regex="x")
    with pytest.raises(SpeakEmbError, match="bad --speaker-regex"):
        load_corpus(root, speaker_regex="(")
    with pytest.raises(SpeakEmbError, match="does not match"):
        load_corpus(root, speaker_regex="(zzz)")
    with pytest.raises(SpeakEmbError, match="no audio files"):
        load_corpus(touch(tmp_path / "empty" / "a" / "readme.txt").parent.parent)
    with pytest.raises(SpeakEmbError, match="not found"):
        load_corpus(tmp_path / "nowhere")


def test_csv_manifest(tmp_path):
    touch(tmp_path / "audio" / "one.wav")
    m = tmp_path / "list.csv"
    m.write_text("path,speaker_id,gender,age,accent\n"
                 "audio/one.wav,s1,female,31,Scottish\n"
                 f"{tmp_path / 'abs.wav'},s2,,,\n")
    kind, utts = load_corpus(m)
    assert kind == "manifest"
    one = next(u for u in utts if u.speaker_id == "s1")
    assert one.path == str(tmp_path / "audio" / "one.wav")
    assert one.utterance_id == "audio/one" and one.gender == "f" and one.age == 31 and one.accent == "Scottish"
    two = next(u for u in utts if u.speaker_id == "s2")
    assert two.gender == "" and math.isnan(two.age)


@pytest.mark.parametrize("text,msg", [
    ("file,who\na.wav,s\n", "lacks the column"),
    ("path,speaker,age\na.wav,s,old\n", "not a number"),
    ("path,speaker,gender\na.wav,s,x\n", "unknown gender"),
    ("path,speaker,utterance_id\na.wav,s,u\nb.wav,s,u\n", "occurs twice"),
])
def test_manifest_errors_name_the_problem(tmp_path, text, msg):
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(SpeakEmbError, match=msg):
        load_corpus(m)
