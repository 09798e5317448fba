"""Audio loading and the preprocessing each Toucan release applies before its speaker encoders.

Reading goes through soundfile (wav, flac, ogg, and whatever else the installed libsndfile reads). What
happens next follows the Toucan source at the tag a profile names (see docs/toucan-conditioning.md):

``toucan-v2.2`` (``Preprocessing/ProsodicConditionExtractor.py`` + ``AudioPreprocessor.normalize_audio``)
    mono (mean of the channels); integrated loudness measured with pyloudnorm and normalised to -30 LUFS;
    divided by the peak so the peak is 1.0; to float32; resampled to 16 kHz with torchaudio's ``Resample``
    (default sinc interpolation); ``numpy.trim_zeros`` on the result.
``toucan-v3`` (``InferenceInterfaces/ToucanTTSInterface.set_utterance_embedding`` at v3.x)
    mono (mean of the channels); to float32; resampled to 16 kHz with torchaudio's ``Resample``. No
    loudness normalisation, no trimming.

Files a run cannot use raise :class:`BadAudio` with a short reason code; the extraction pipeline lists them
in its rejects file instead of stopping. Stereo is mixed down and any sampling rate is resampled, as Toucan
does; a file is rejected when it is missing, unreadable, empty, holds NaN/inf samples, is shorter than the
minimum duration, or is silent (no 400 ms block above pyloudnorm's absolute gate of -70 LUFS).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from toucan_speakemb.core.profiles import KNOWN_PROFILES

TARGET_SR = 16000
MIN_SECONDS = 0.5
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")

# Reason codes written to rejects files (stable: scripts may filter on them).
REASONS = {
    "missing": "file does not exist",
    "unreadable": "not a readable audio file (corrupt or unsupported format)",
    "empty": "no samples",
    "non-finite": "contains NaN or infinite samples",
    "too-short": "shorter than the minimum duration",
    "silent": "no 400 ms block louder than -70 LUFS",
    "encoder-failed": "the speaker encoder failed on this file",
}



class BadAudio(Exception):
    """A file the pipeline skips: ``reason`` is one of :data:`REASONS`, ``detail`` says more (one line)."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        self.reason = reason
        self.detail = " ".join(str(detail).split())[:300]
        super().__init__(f"{reason}: {self.detail}" if self.detail else reason)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def audio_info(path: str | Path) -> Tuple[int, int, int]:
    """(frames, sample rate, channels) from the file header, without decoding; BadAudio when unreadable."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise BadAudio("missing", str(p))
    if p.is_file() and p.stat().st_size == 0:
        raise BadAudio("empty", "0-byte file")
    try:
        info = sf.info(str(p))
    except Exception as e:  # libsndfile reports many kinds of damage, all as generic errors
        raise BadAudio("unreadable", _first_line(e)) from None
    return int(info.frames), int(info.samplerate), int(info.channels)


def read_audio(path: str | Path) -> Tuple[np.ndarray, int]:
    """Decode a file to float64 samples, (n,) for mono or (n, channels), as ``soundfile.read`` gives them.

    This is how Toucan reads reference audio (``soundfile.read(path)``), so the samples are the same.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise BadAudio("missing", str(p))
    if p.is_dir():
        raise BadAudio("unreadable", "is a folder")
    if p.stat().st_size == 0:
        raise BadAudio("empty", "0-byte file")
    try:
        wave, sr = sf.read(str(p), dtype="float64", always_2d=False)
    except Exception as e:
        raise BadAudio("unreadable", _first_line(e)) from None
    return wave, int(sr)


def to_mono(wave: np.ndarray) -> np.ndarray:
    """Mean over channels of a (n, channels) array (what librosa.to_mono does on its transpose)."""
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise BadAudio("unreadable", f"unexpected sample array shape {wave.shape}")
    if wave.shape[1] == 1:
        return wave[:, 0]
    return np.mean(wave.T, axis=0)


_RESAMPLERS: Dict[Tuple[int, int], object] = {}


def resample(wave, orig_sr: int, new_sr: int = TARGET_SR):
    """Resample a float32 torch tensor with torchaudio's ``Resample`` transform (default settings), cached."""
    if orig_sr == new_sr:
        return wave
    key = (int(orig_sr), int(new_sr))
    r = _RESAMPLERS.get(key)
    if r is None:
        from torchaudio.transforms import Resample

        r = Resample(orig_freq=orig_sr, new_freq=new_sr)
        _RESAMPLERS[key] = r
    return r(wave)


def _integrated_loudness(mono: np.ndarray, sr: int) -> float:
    import pyloudnorm as pyln

    meter = pyln.Meter(sr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(meter.integrated_loudness(mono))


def check_signal(mono: np.ndarray, sr: int, min_seconds: float = MIN_SECONDS) -> float:
    """Reject empty, non-finite, too short and silent signals; returns the integrated loudness (LUFS)."""
    n = mono.shape[0]
    if n == 0:
        raise BadAudio("empty", "0 samples")
    if not np.all(np.isfinite(mono)):
        bad = int((~np.isfinite(mono)).sum())
        raise BadAudio("non-finite", f"{bad} of {n} samples are NaN or infinite")
    secs = n / sr
    if secs < min_seconds:
        raise BadAudio("too-short", f"{secs:.3f} s < {min_seconds:g} s")
    if not np.any(mono):
        raise BadAudio("silent", "all samples are zero")
    if n < int(0.4 * sr) + 1:  # pyloudnorm needs one full 400 ms block
        raise BadAudio("too-short", f"{secs:.3f} s is shorter than one 400 ms loudness block")
    lufs = _integrated_loudness(mono, sr)
    if not np.isfinite(lufs):
        raise BadAudio("silent", f"peak {np.abs(mono).max():.2e}, below the -70 LUFS gate everywhere")
    return lufs


def preprocess(wave: np.ndarray, sr: int, profile: str = "toucan-v2.2", min_seconds: float = MIN_SECONDS):
    """Samples as read from a file -> the 16 kHz float32 torch tensor a profile's encoders are given."""
    import torch

    # the recipe is the profile registry's (core/profiles.py); toucan-native is done by a Toucan checkout's own
    # code (toucan_speakemb/extract/encoders.py)
    recipe = KNOWN_PROFILES[profile].preprocessing if profile in KNOWN_PROFILES else ""
    if not recipe:
        raise ValueError(f"no waveform preprocessing for profile {profile!r}")
    mono = to_mono(np.asarray(wave))
    if mono.dtype != np.float64:
        mono = mono.astype(np.float64)
    lufs = check_signal(mono, sr, min_seconds)
    if recipe == "toucan-v2.2":
        import pyloudnorm as pyln

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyloudnorm warns about clipping; the peak division follows
            normed = pyln.normalize.loudness(mono, lufs, -30.0)
        normed = np.divide(normed, np.amax(np.abs(normed)))
        out = resample(torch.Tensor(normed), sr, TARGET_SR)
        out = torch.from_numpy(np.trim_zeros(out.numpy()).copy())
    else:  # toucan-v3
        out = resample(torch.tensor(mono, dtype=torch.float32), sr, TARGET_SR)
    if not torch.isfinite(out).all():
        raise BadAudio("non-finite", "preprocessing produced NaN or infinite samples")
    if out.shape[0] < min_seconds * TARGET_SR:
        raise BadAudio("too-short", f"{out.shape[0] / TARGET_SR:.3f} s after trimming < {min_seconds:g} s")
    return out.contiguous()


def load_and_preprocess(path: str | Path, profile: str = "toucan-v2.2", min_seconds: float = MIN_SECONDS):
    wave, sr = read_audio(path)
    return preprocess(wave, sr, profile, min_seconds)


@dataclass
class AudioFacts:
    """What a file header says, for planning batches (duration in seconds; NaN when unknown)."""

    seconds: float
    sample_rate: int
    channels: int


def probe(path: str | Path) -> AudioFacts:
    frames, sr, ch = audio_info(path)
    return AudioFacts(frames / sr if sr > 0 else float("nan"), sr, ch)


def is_audio_file(path: Path, extensions: Optional[Tuple[str, ...]] = None) -> bool:
    return path.is_file() and path.suffix.lower() in (extensions or AUDIO_EXTENSIONS)
