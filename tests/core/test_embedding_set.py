"""Specification tests for EmbeddingSet: the file format, the interchange .npz, validation and atomic writes."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line as one_line_error
from toucan_speakemb import EmbeddingSet, SpeakEmbError, get_profile
from toucan_speakemb.core import fileio
from toucan_speakemb.core.fileio import META_KEY, save_tensors


def make_set(n_speakers=3, per=(2, 3, 1), dim=5, seed=0, with_attributes=True) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    ids = [f"spk{s}" for s in range(n_speakers) for _ in range(per[s])]
    n = len(ids)
    kw = {}
    if with_attributes:
        kw = dict(
            utterance_ids=[f"{s}/u{i}" for i, s in enumerate(ids)],
            gender=["f" if s in ("spk0", "spk2") else "m" for s in ids],
            age=np.array([31.0 if s == "spk0" else math.nan for s in ids], dtype=np.float32),
            accent=["scottish" if s == "spk1" else "" for s in ids],
            provenance={"corpus": "unit-test", "encoder": {"name": "ecapa", "sr": 16000}, "n": n},
        )
    return EmbeddingSet(rng.normal(size=(n, dim)).astype(np.float32), ids, get_profile("custom-test", dim), **kw)


def safetensors_header(path: Path) -> dict:
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


# ---- round trips ----------------------------------------------------------------------------------------

def test_save_load_round_trips_every_field(tmp_path):
    es = make_set()
    path = es.save(tmp_path / "set.safetensors")
    back = EmbeddingSet.load(path)
    np.testing.assert_array_equal(back.embeddings, es.embeddings)
    assert back.embeddings.dtype == np.float32
    assert back.speaker_ids == es.speaker_ids
    assert back.utterance_ids == es.utterance_ids
    assert back.gender == es.gender
    np.testing.assert_array_equal(back.age, es.age)  # NaN positions compare equal
    assert np.isnan(back.age).sum() == np.isnan(es.age).sum() > 0
    assert back.accent == es.accent
    assert back.provenance == es.provenance
    assert back.profile == es.profile


def test_save_load_round_trips_a_set_without_optional_attributes(tmp_path):
    es = make_set(with_attributes=False)
    back = EmbeddingSet.load(es.save(tmp_path / "plain.safetensors"))
    np.testing.assert_array_equal(back.embeddings, es.embeddings)
    assert back.speaker_ids == es.speaker_ids
    assert back.utterance_ids is None and back.gender is None and back.age is None and back.accent is None


def test_known_profile_round_trips_by_name(tmp_path):
    es = EmbeddingSet(np.ones((2, 192), np.float32), ["a", "b"], get_profile("toucan-v3"))
    back = EmbeddingSet.load(es.save(tmp_path / "v3.safetensors"))
    assert back.profile == get_profile("toucan-v3")
    assert back.profile.toucan


def test_written_file_is_safetensors_with_json_metadata_and_no_pickle(tmp_path):
    es = make_set()
    path = es.save(tmp_path / "set.safetensors")
    raw = path.read_bytes()
    assert raw[:1] != b"\x80"  # pickle protocol 2+ opcode
    assert not raw.startswith(b"PK")  # not a zip (torch.save / npz)
    header = safetensors_header(path)
    assert header["embeddings"]["dtype"] == "F32"
    assert header["embeddings"]["shape"] == [len(es), es.dim]
    meta = json.loads(header["__metadata__"][META_KEY])
    assert meta["kind"] == "embedding-set"
    assert meta["speaker_ids"] == es.speaker_ids
    assert meta["profile"]["name"] == es.profile.name


def test_loading_never_unpickles(tmp_path, monkeypatch):
    es = make_set()
    st = es.save(tmp_path / "set.safetensors")
    npz = es.save(tmp_path / "set.npz")

    def forbidden(*a, **k):
        raise AssertionError("pickle / torch.load was called while loading an embedding set")

    import torch

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert len(EmbeddingSet.load(st)) == len(es)
    assert len(EmbeddingSet.load(npz)) == len(es)


def test_npz_interchange_export_import_round_trip(tmp_path):
    es = make_set()
    path = es.save(tmp_path / "x.npz")
    with np.load(path, allow_pickle=False) as z:  # a plain npz anyone can read without pickle
        assert set(z.files) == {"embeddings", "speaker_ids", "utterance_ids", "gender", "age", "accent"}
        assert z["speaker_ids"].dtype.kind == "U"
    back = EmbeddingSet.load(path, profile="custom-test")
    np.testing.assert_array_equal(back.embeddings, es.embeddings)
    assert back.speaker_ids == es.speaker_ids
    assert back.utterance_ids == es.utterance_ids
    assert back.gender == es.gender
    np.testing.assert_array_equal(back.age, es.age)
    assert back.accent == es.accent
    assert back.profile.name == "custom-test" and back.profile.dim == es.dim


def test_npz_import_guesses_a_known_profile_from_the_width(tmp_path):
    p = tmp_path / "v3.npz"
    np.savez(p, embeddings=np.zeros((2, 192), np.float32), speaker_ids=np.array(["a", "b"]))
    assert EmbeddingSet.load(p).profile.name == "toucan-v3"


def test_npz_with_pickled_object_arrays_is_refused(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, embeddings=np.zeros((2, 4), np.float32), speaker_ids=np.array(["a", "b"], dtype=object))
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    msg = one_line_error(ei)
    assert "pickle" in msg.lower()
    assert str(p) in msg


def test_npz_without_the_interchange_arrays_is_refused_naming_them(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, x=np.zeros((2, 4)))
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    msg = one_line_error(ei)
    assert "embeddings" in msg and "speaker_ids" in msg


# ---- damaged or wrong inputs ----------------------------------------------------------------------------

def test_missing_file_is_a_clear_error(tmp_path):
    for name in ("nope.safetensors", "nope.npz"):
        with pytest.raises(SpeakEmbError) as ei:
            EmbeddingSet.load(tmp_path / name)
        msg = one_line_error(ei)
        assert "not found" in msg and name in msg


def test_empty_file_is_a_clear_error(tmp_path):
    for name in ("empty.safetensors", "empty.npz"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(SpeakEmbError) as ei:
            EmbeddingSet.load(tmp_path / name)
        assert "empty" in one_line_error(ei)


def test_truncated_safetensors_file_is_reported_as_damaged(tmp_path):
    path = make_set().save(tmp_path / "set.safetensors")
    raw = path.read_bytes()
    for cut in (len(raw) - 7, len(raw) // 2, 5):
        path.write_bytes(raw[:cut])
        with pytest.raises(SpeakEmbError) as ei:
            EmbeddingSet.load(path)
        assert "damaged" in one_line_error(ei)


def test_random_bytes_are_reported_as_damaged(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    assert "damaged" in one_line_error(ei)


def test_truncated_npz_is_reported_as_unreadable(tmp_path):
    path = make_set().save(tmp_path / "set.npz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(path)
    msg = one_line_error(ei)
    assert "not a readable .npz" in msg


def test_npz_of_random_bytes_is_reported_as_unreadable_not_as_pickled_data(tmp_path):
    """A corrupt .npz must not be blamed on pickled objects the user never wrote."""
    p = tmp_path / "junk.npz"
    p.write_bytes(np.random.default_rng(1).bytes(300))
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    msg = one_line_error(ei)
    assert "not a readable .npz" in msg, msg


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"embeddings": np.zeros((2, 4), np.float32)}, str(p))
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    assert "not written by toucan-speakemb" in one_line_error(ei)


@pytest.mark.parametrize("kind", ["voice-bank", "generator", "checkpoint"])
def test_another_kind_of_file_is_refused_naming_its_kind(tmp_path, kind):
    p = save_tensors(tmp_path / f"{kind}.safetensors", {"embeddings": np.zeros((2, 4), np.float32)},
                     {"kind": kind, "format_version": 1, "profile": {"name": "custom-test", "dim": 4},
                      "speaker_ids": ["a", "b"]})
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    msg = one_line_error(ei)
    assert kind in msg and "not an embedding set" in msg


def test_a_real_voice_bank_is_refused_as_an_embedding_set(tmp_path):
    from toucan_speakemb.voices.bank import VoiceBank

    bank = VoiceBank(np.zeros((2, 4), np.float32), np.array([1, 2]), ["g-1", "g-2"], get_profile("custom-test", 4))
    p = bank.save(tmp_path / "bank.safetensors")
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    assert "voice-bank" in one_line_error(ei)


def test_future_format_version_is_refused_naming_both_versions(tmp_path):
    es = make_set()
    meta = {"kind": "embedding-set", "format_version": 99, "profile": es.profile.to_json(),
            "speaker_ids": es.speaker_ids}
    p = save_tensors(tmp_path / "future.safetensors", {"embeddings": es.embeddings}, meta)
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    msg = one_line_error(ei)
    assert "format version" in msg and "99" in msg and "1" in msg


def test_nan_rows_are_refused_with_their_count():
    x = np.zeros((4, 3), np.float32)
    x[1, 0] = np.nan
    x[3, 2] = np.inf
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet(x, ["a", "a", "b", "b"], get_profile("custom-test", 3))
    msg = one_line_error(ei)
    assert "NaN" in msg and "2 rows" in msg


def test_nan_rows_in_an_npz_are_refused(tmp_path):
    p = tmp_path / "nan.npz"
    x = np.ones((3, 4), np.float32)
    x[0, 0] = np.nan
    np.savez(p, embeddings=x, speaker_ids=np.array(["a", "b", "c"]))
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    assert "NaN" in one_line_error(ei)


def test_wrong_dimension_for_a_known_profile_is_refused_naming_both_dimensions(tmp_path):
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet(np.zeros((2, 100), np.float32), ["a", "b"], get_profile("toucan-v2.2"))
    msg = one_line_error(ei)
    assert "toucan-v2.2" in msg and "100" in msg and "704" in msg

    p = tmp_path / "x.npz"
    np.savez(p, embeddings=np.zeros((2, 100), np.float32), speaker_ids=np.array(["a", "b"]))
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p, profile="toucan-v2.2")
    msg = one_line_error(ei)
    assert "toucan-v2.2" in msg and "100" in msg and "704" in msg

    meta = {"kind": "embedding-set", "format_version": 1, "profile": {"name": "toucan-v2.2", "dim": 100},
            "speaker_ids": ["a", "b"]}
    p = save_tensors(tmp_path / "bad.safetensors", {"embeddings": np.zeros((2, 100), np.float32)}, meta)
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p)
    msg = one_line_error(ei)
    assert "toucan-v2.2" in msg and "100" in msg and "704" in msg


def test_loading_with_an_expected_profile_refuses_another_one(tmp_path):
    p = make_set().save(tmp_path / "s.safetensors")
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet.load(p, profile="toucan-v3")
    msg = one_line_error(ei)
    assert "custom-test" in msg and "toucan-v3" in msg


@pytest.mark.parametrize("field_name", ["speaker_ids", "utterance_ids", "gender", "accent", "age"])
def test_attribute_of_the_wrong_length_is_refused_naming_it(field_name):
    x = np.zeros((3, 2), np.float32)
    kw = {"speaker_ids": ["a", "b", "c"]}
    kw[field_name] = [1.0, 2.0] if field_name == "age" else ["a", "b"] if field_name != "gender" else ["f", "m"]
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet(x, profile=get_profile("custom-test", 2), **kw)
    msg = one_line_error(ei)
    assert field_name in msg and "2" in msg and "3" in msg


def test_duplicate_utterance_ids_are_refused():
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet(np.zeros((2, 2), np.float32), ["a", "b"], get_profile("custom-test", 2),
                     utterance_ids=["u", "u"])
    assert "not unique" in one_line_error(ei)


def test_empty_or_one_dimensional_embeddings_are_refused():
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet(np.zeros((0, 2), np.float32), [], get_profile("custom-test", 2))
    assert "empty" in one_line_error(ei)
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet(np.zeros(4, np.float32), ["a"] * 4, get_profile("custom-test", 4))
    assert "2-D" in one_line_error(ei)


# ---- atomic writes --------------------------------------------------------------------------------------

def _leftovers(folder: Path, keep: set) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_a_failure_at_the_rename_leaves_the_previous_file_intact_and_no_temp_file(tmp_path, monkeypatch, suffix):
    target = tmp_path / f"set{suffix}"
    make_set(seed=1).save(target)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        make_set(seed=2).save(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert _leftovers(tmp_path, {target.name}) == []


def test_a_failure_mid_write_leaves_the_previous_file_intact_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "set.safetensors"
    make_set(seed=1).save(target)
    before = target.read_bytes()

    def fail_fsync(fd):
        raise KeyboardInterrupt  # a kill-like interruption after the bytes were handed to the OS

    monkeypatch.setattr(fileio.os, "fsync", fail_fsync)
    with pytest.raises(KeyboardInterrupt):
        make_set(seed=2).save(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert _leftovers(tmp_path, {target.name}) == []
    assert EmbeddingSet.load(target).embeddings.shape == make_set(seed=1).embeddings.shape


def test_a_successful_write_leaves_only_the_target(tmp_path):
    make_set().save(tmp_path / "a.safetensors")
    make_set().save(tmp_path / "a.safetensors")  # overwrite
    assert _leftovers(tmp_path, {"a.safetensors"}) == []


# ---- views ----------------------------------------------------------------------------------------------

def test_speaker_means_are_the_per_speaker_averages_in_order_of_first_appearance():
    rng = np.random.default_rng(3)
    ids = ["b", "a", "b", "c", "a", "b"]
    x = rng.normal(size=(6, 4)).astype(np.float32)
    es = EmbeddingSet(x, ids, get_profile("custom-test", 4), gender=["m", "f", "m", "", "f", "m"],
                      age=[40, 20, 40, np.nan, 20, 40])
    m = es.speaker_means()
    assert m.speaker_ids == ["b", "a", "c"]
    for row, spk in enumerate(["b", "a", "c"]):
        rows = [i for i, s in enumerate(ids) if s == spk]
        np.testing.assert_allclose(m.embeddings[row], x[rows].astype(np.float64).mean(0), rtol=1e-6, atol=1e-7)
    assert m.gender == ["m", "f", ""]
    np.testing.assert_array_equal(m.age, np.array([40, 20, np.nan], np.float32))
    assert len(set(m.utterance_ids)) == 3
    assert m.profile == es.profile


def test_counts_per_speaker_and_speaker_index():
    es = make_set(per=(2, 3, 1))
    assert es.counts_per_speaker() == {"spk0": 2, "spk1": 3, "spk2": 1}
    np.testing.assert_array_equal(es.speaker_index(), [0, 0, 1, 1, 1, 2])
    assert es.speakers == ["spk0", "spk1", "spk2"]


@pytest.mark.parametrize("raw,expected", [
    ("F", "f"), ("female", "f"), (" Woman ", "f"), ("w", "f"),
    ("M", "m"), ("Male", "m"), ("man", "m"),
    ("", ""), ("unknown", ""), ("U", ""), ("?", ""), ("nan", ""), (None, ""),
])
def test_gender_values_are_normalised_to_f_m_or_empty(raw, expected):
    es = EmbeddingSet(np.zeros((1, 2), np.float32), ["a"], get_profile("custom-test", 2), gender=[raw])
    assert es.gender == [expected]


def test_unknown_gender_value_is_refused_naming_it():
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet(np.zeros((1, 2), np.float32), ["a"], get_profile("custom-test", 2), gender=["robot"])
    assert "robot" in one_line_error(ei)


def test_subset_keeps_attributes_aligned():
    es = make_set()
    sub = es.subset(np.array([False, True, False, True, True, False]))
    assert sub.speaker_ids == [es.speaker_ids[i] for i in (1, 3, 4)]
    assert sub.utterance_ids == [es.utterance_ids[i] for i in (1, 3, 4)]
    np.testing.assert_array_equal(sub.embeddings, es.embeddings[[1, 3, 4]])
    np.testing.assert_array_equal(sub.age, es.age[[1, 3, 4]])


def test_written_files_get_the_usual_permissions_not_owner_only(tmp_path):
    import os
    import stat

    from toucan_speakemb.core.fileio import atomic_write_text

    mask = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "x.json", "{}")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
