"""Audio loading and Toucan-matched preprocessing: what each kind of file becomes, or why it is refused."""

import numpy as np
import pytest
import soundfile as sf

from conftest import read_audio, speak, write_audio
from toucan_speakemb.extract.audio import BadAudio, load_and_preprocess, preprocess, probe


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """espeak-ng speech (22.05 kHz mono) as float64 samples, and its sampling rate."""
    p = speak(tmp_path_factory.mktemp("a") / "s.wav", "The rain in Spain stays mainly in the plain.")
    return read_audio(p)


@pytest.mark.parametrize("profile", ["toucan-v2.2", "toucan-v3"])
def test_stereo_is_mixed_to_the_mean_of_its_channels(tmp_path, speech, profile):
    wave, sr = speech
    stereo = np.stack([wave, 0.5 * wave[::-1]], axis=1)
    write_audio(tmp_path / "st.wav", stereo, sr, subtype="FLOAT")
    write_audio(tmp_path / "mono.wav", stereo.mean(axis=1), sr, subtype="FLOAT")
    a = load_and_preprocess(tmp_path / "st.wav", profile)
    b = load_and_preprocess(tmp_path / "mono.wav", profile)
    assert a.shape == b.shape
    assert np.allclose(a.numpy(), b.numpy(), atol=1e-6)


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_any_rate_is_resampled_to_16k(tmp_path, speech, sr):
    wave, sr0 = speech
    n = int(len(wave) * sr / sr0)
    x = np.interp(np.linspace(0, len(wave) - 1, n), np.arange(len(wave)), wave)
    write_audio(tmp_path / "x.wav", x, sr)
    out = load_and_preprocess(tmp_path / "x.wav", "toucan-v3")
    assert out.dtype.is_floating_point and out.ndim == 1
    assert abs(out.shape[0] - n * 16000 / sr) <= 2  # v3 does not trim: the length follows the rate exactly


def test_v22_normalises_level_and_trims_zeros(speech):
    wave, sr = speech
    padded = np.concatenate([np.zeros(2000), wave, np.zeros(3000)])
    loud = preprocess(padded, sr, "toucan-v2.2").numpy()
    quiet = preprocess(0.05 * padded, sr, "toucan-v2.2").numpy()
    # loudness + peak normalisation make the level irrelevant; trim_zeros removed the padding
    assert np.allclose(loud, quiet, atol=1e-5)
    assert loud[0] != 0 and loud[-1] != 0
    assert 0.9 < np.abs(loud).max() < 1.1
    # v3 keeps the level and the zeros
    v3 = preprocess(0.05 * padded, sr, "toucan-v3").numpy()
    assert np.abs(v3).max() < 0.1 and v3[0] == 0


@pytest.mark.parametrize("fmt,subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_flac_and_ogg_are_read(tmp_path, speech, fmt, subtype):
    wave, sr = speech
    p = tmp_path / f"x.{fmt.lower()}"
    sf.write(str(p), wave, sr, format=fmt, subtype=subtype)
    out = load_and_preprocess(p, "toucan-v2.2")
    assert out.shape[0] > 16000
    assert probe(p).sample_rate == sr


def _bad(tmp_path, kind):
    p = tmp_path / f"{kind}.wav"
    if kind == "corrupt":
        p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not a wave file" * 3)
    elif kind == "zero-bytes":
        p.write_bytes(b"")
    elif kind == "no-frames":
        sf.write(str(p), np.zeros(0), 16000)
    elif kind == "silent":
        sf.write(str(p), np.zeros(16000 * 2), 16000)
    elif kind == "nan":
        x = np.sin(np.arange(32000) / 10.0) * 0.3
        x[1000:1010] = np.nan
        sf.write(str(p), x, 16000, subtype="FLOAT")
    elif kind == "short":
        sf.write(str(p), 0.3 * np.sin(np.arange(4000) / 5.0), 16000)
    elif kind == "missing":
        pass
    return p


@pytest.mark.parametrize("kind,reason", [
    ("corrupt", "unreadable"), ("zero-bytes", "empty"), ("no-frames", "empty"), ("silent", "silent"),
    ("nan", "non-finite"), ("short", "too-short"), ("missing", "missing"),
])
@pytest.mark.parametrize("profile", ["toucan-v2.2", "toucan-v3"])
def test_bad_files_are_refused_with_a_reason(tmp_path, kind, reason, profile):
    p = _bad(tmp_path, kind)
    with pytest.raises(BadAudio) as ei:
        load_and_preprocess(p, profile)
    assert ei.value.reason == reason
    assert "\n" not in str(ei.value)


def test_min_seconds_is_configurable(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(str(p), 0.3 * np.sin(np.arange(int(16000 * 0.8)) / 5.0), 16000)
    assert load_and_preprocess(p, "toucan-v3", min_seconds=0.5).shape[0] == int(16000 * 0.8)
    with pytest.raises(BadAudio, match="too-short"):
        load_and_preprocess(p, "toucan-v3", min_seconds=1.0)
