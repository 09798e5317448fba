"""The IMS Toucan adapter: puts a given embedding into a Toucan inference interface for the next utterance and
restores the previous one afterwards, whatever the supported release.

The release is recognised from the interface's (or the checkout's) own source (:mod:`.releases`), its space
from the checkpoint's ``default_emb`` length — never from a flag. What differs between releases lives in the
family modules (:mod:`.toucan_v2`, :mod:`.toucan_v3`), which quote what they rely on in Toucan's source. A
generator of another profile or dimension is refused with both named.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from toucan_speakemb.core.distributed import resolve_device
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_bytes
from toucan_speakemb.core.profiles import Profile, get_profile
from toucan_speakemb.core.toucan_checkout import checkout_code

from toucan_speakemb.adapters.releases import CLONE_HINT, Release, release_of_checkout, release_of_interface

def checkpoint_default_embedding(checkpoint: Union[str, os.PathLike, Dict[str, Any]]) -> np.ndarray:
    """``checkpoint["default_emb"]`` as a flat float32 array: the embedding the Toucan model speaks with when
    given none (its space is the one the model was trained in)."""
    what = "the Toucan checkpoint"
    if not isinstance(checkpoint, dict):
        path = Path(checkpoint)
        what = f"Toucan checkpoint {path}"
        if not path.is_file():
            raise SpeakEmbError(f"{what} not found")
        import torch

        try:  # a foreign format; tensors and plain values only, nothing is unpickled
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged or non-weights files
            raise SpeakEmbError(f"{what} cannot be read as weights ({str(e).strip().splitlines()[0][:160]})") from None
    if not isinstance(checkpoint, dict) or "default_emb" not in checkpoint:
        raise SpeakEmbError(f"{what} has no 'default_emb' (is it a vocoder, or not a Toucan TTS model?)")
    return np.asarray(checkpoint["default_emb"].detach().cpu().float().numpy(), dtype=np.float32).reshape(-1)


def checkpoint_embedding_dim(checkpoint: Union[str, os.PathLike, Dict[str, Any], int]) -> int:
    """Length of ``checkpoint["default_emb"]``: the space the Toucan model was trained in (an int is that
    length, already read)."""
    if isinstance(checkpoint, (int, np.integer)):
        return int(checkpoint)
    return int(checkpoint_default_embedding(checkpoint).size)


class ToucanAdapter:
    """Wraps a Toucan inference interface; ``voice(embedding)`` conditions the utterances made inside it.

    ``checkpoint`` (path, loaded dict, or the length of its ``default_emb``) names the model's space; without it the
    interface's current ``default_utterance_embedding`` is used, which its constructor set from the same
    checkpoint entry. ``source``: where the interface was built from (checkout, model files), for sidecars.
    """

    def __init__(self, interface, checkpoint: Union[str, os.PathLike, Dict[str, Any], int, None] = None,
                 release: Optional[Release] = None, source: Optional[Dict[str, Any]] = None):
        self.interface = interface
        self.release = release or release_of_interface(interface)
        problem = self.release.environment_problem()
        if problem:
            raise SpeakEmbError(problem)
        self.source = dict(source or {})
        current = int(np.prod(tuple(interface.default_utterance_embedding.shape)))
        self.dim = checkpoint_embedding_dim(checkpoint) if checkpoint is not None else current
        if current != self.dim:
            raise SpeakEmbError(f"the interface holds a {current}-dim embedding but its checkpoint's default_emb is "
                                f"{self.dim}-dim")
        self.profile: Profile = get_profile(self.release.profile)
        if self.dim != self.profile.dim:
            raise SpeakEmbError(f"{self.release.title()} with a {self.dim}-dim checkpoint default_emb is not a "
                                f"supported space ({self.release.name} is conditioned on {self.profile.dim} dims, "
                                f"profile '{self.profile.name}')")
        self.noise_profiles: Dict[bytes, Any] = {}  # v2.x noise_reduce: one noise profile per voice

    @property
    def family(self) -> str:
        return self.release.family

    def describe(self) -> str:
        return f"{self.release.title()} (checkpoint default_emb {self.dim}-dim, profile '{self.profile.name}')"

    def info(self) -> Dict[str, Any]:
        """The Toucan side of a sidecar: release, interface, space and (when known) the files it was built from."""
        return {"release": self.release.name, "family": self.release.family, "interface": self.release.interface,
                "default_emb_dim": self.dim, "profile": self.profile.name, **self.source}

    def check_generator(self, generator) -> None:
        """Refuse a generator whose profile or dimension is not the Toucan model's, naming both."""
        p = generator.profile
        if p.name != self.profile.name or p.dim != self.profile.dim:
            raise SpeakEmbError(f"generator {generator.path} is in profile '{p.name}' ({p.dim}-dim) but the Toucan "
                                f"model is {self.describe()}")

    # ---- injection ---------------------------------------------------------------------------------------
    SAVED = ("default_utterance_embedding", "prototypical_noise")

    def inject(self, embedding) -> None:
        """Condition the following utterances on ``embedding`` (array-like of the model's dimension)."""
        import torch

        t = torch.as_tensor(np.asarray(embedding, dtype=np.float32).reshape(-1))
        if t.numel() != self.dim:
            raise SpeakEmbError(f"embedding is {t.numel()}-dim but the Toucan model is {self.describe()}")
        if not torch.isfinite(t).all():
            raise SpeakEmbError("embedding contains NaN or infinite values")
        self.release.inject(self.interface, t, self.noise_profiles)

    @contextlib.contextmanager
    def voice(self, embedding):
        """``with adapter.voice(e): ...``: utterances inside use ``e``; the previous embedding (and v2.x's noise
        profile) come back after."""
        it = self.interface
        saved = {k: getattr(it, k) for k in self.SAVED if hasattr(it, k)}
        self.inject(embedding)
        try:
            yield self
        finally:
            for k, v in saved.items():
                setattr(it, k, v)

    # ---- synthesis -----------------------------------------------------------------------------------------
    def before_utterance(self) -> None:
        """Make the next utterance independent of what the interface said before (:meth:`Release.before_utterance`;
        the synthesis path and the hook call it before every utterance)."""
        self.release.before_utterance(self.interface)

    def synthesize(self, text: str, **kwargs) -> Tuple[np.ndarray, int]:
        """One utterance with the current embedding: (float32 wave, sample rate), independent of what the
        interface said before."""
        self.before_utterance()
        wave, sr = self.release.read_output(self.interface(text, **kwargs))
        if hasattr(wave, "detach"):
            wave = wave.detach().cpu().numpy()
        return np.asarray(wave, dtype=np.float32).reshape(-1), sr


def write_wav(path: Union[str, os.PathLike], wave: np.ndarray, sr: int) -> Path:
    """16-bit PCM wav, written atomically (Toucan v3 writes PCM_16 too)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, np.float32), -1.0, 1.0), int(sr), format="WAV", subtype="PCM_16")
    return atomic_write_bytes(path, buf.getvalue())


# ---- building an interface from a checkout ---------------------------------------------------------------
class ToucanModels:
    """A Toucan checkout and the model files to build its interface from, checked before anything is loaded.

    Everything missing (checkout, TTS model, vocoder) is named in one error line with where to get it; the
    model files default to where the release's own downloader (or README) puts them.
    """

    def __init__(self, toucan_dir: Union[str, os.PathLike, None], tts_model: Union[str, os.PathLike, None] = None,
                 vocoder: Union[str, os.PathLike, None] = None):
        if toucan_dir is None:
            raise SpeakEmbError(f"no Toucan checkout: give --toucan-dir DIR (or set TOUCAN_DIR); {CLONE_HINT}")
        root = Path(toucan_dir).expanduser().absolute()
        if not root.is_dir():
            raise SpeakEmbError(f"Toucan checkout {root} does not exist; {CLONE_HINT.replace('IMS-Toucan`', f'IMS-Toucan {root}`')}")
        self.root, self.release = root, release_of_checkout(root)
        problem = self.release.environment_problem()
        if problem:
            raise SpeakEmbError(problem)
        d_tts, d_voc = self.release.default_models(root)
        self.tts = Path(tts_model).expanduser().resolve() if tts_model else d_tts
        self.vocoder = Path(vocoder).expanduser().resolve() if vocoder else d_voc
        for what, p, flag in (("TTS model", self.tts, "--tts-model"), ("vocoder", self.vocoder, "--vocoder")):
            if p is None or not p.is_file():
                where = f"{p} does not exist" if p is not None else "none given and none in the Hugging Face cache"
                raise SpeakEmbError(f"no {what} for the Toucan {self.release.name} checkout {root} ({where}): give "
                                    f"{flag} PATH; get {self.release.models_help()}")
        self.dim = checkpoint_embedding_dim(self.tts)
        self.profile = get_profile(self.release.profile)
        if self.dim != self.profile.dim:
            raise SpeakEmbError(f"TTS model {self.tts} has a {self.dim}-dim default_emb, which the Toucan "
                                f"{self.release.name} checkout's interface does not take ({self.profile.dim}-dim, "
                                f"profile '{self.profile.name}')")

    @property
    def family(self) -> str:
        return self.release.family

    def describe(self) -> Dict[str, Any]:
        return {"release": self.release.name, "family": self.release.family, "interface": self.release.interface,
                "default_emb_dim": self.dim, "profile": self.profile.name, "checkout": str(self.root),
                "tts_model": str(self.tts), "vocoder": str(self.vocoder)}

    def check_generator(self, generator) -> None:
        p = generator.profile
        if p.name != self.profile.name or p.dim != self.profile.dim:
            raise SpeakEmbError(f"generator {generator.path} is in profile '{p.name}' ({p.dim}-dim) but the Toucan "
                                f"model {self.tts} is {self.release.title()} with a {self.dim}-dim default_emb "
                                f"('{self.profile.name}')")

    def load(self, device: str = "auto", language: Optional[str] = None) -> ToucanAdapter:
        """Build the checkout's own inference interface on these files (``Release.build``, with the checkout's
        code importable: ``core.toucan_checkout``) on ``device`` (auto: the GPU of this process's LOCAL_RANK when
        CUDA is there, else cpu) and wrap it."""
        device = resolve_device(device)
        try:
            with checkout_code(self.root, f"Toucan {self.release.name} checkout"):
                interface = self.release.build(self.root, self.tts, self.vocoder, device, language)
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            hint = self.release.build_failure_hint(self.root)
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise SpeakEmbError(f"building Toucan's {self.release.name} interface failed ({first}){hint}") from None
        return ToucanAdapter(interface, self.dim, release=self.release, source={**self.describe(), "device": device})


def load_interface(toucan_dir, tts_model=None, vocoder=None, device: str = "auto",
                   language: Optional[str] = None) -> ToucanAdapter:
    """``ToucanModels(toucan_dir, tts_model, vocoder).load(device, language)``."""
    return ToucanModels(toucan_dir, tts_model, vocoder).load(device, language)
