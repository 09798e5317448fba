"""The IMS Toucan adapter: puts a given embedding into a Toucan inference interface for the next utterance and
restores the previous one afterwards.

What it relies on, read from IMS-Toucan's source at the tags named (no Toucan code is copied here):

- **v2.2** ``InferenceInterfaces/InferenceFastSpeech2.py``: ``InferenceFastSpeech2(device="cpu",
  model_name="Meta", language="en", noise_reduce=False)`` loads ``Models/FastSpeech2_<model_name>/best.pt``
  and ``Models/HiFiGAN_combined/best.pt`` relative to the working folder, keeps the checkpoint's
  ``default_emb`` (704 = ECAPA 192 ⊕ x-vector 512) in ``default_utterance_embedding``;
  ``set_utterance_embedding(self, path_to_reference_audio)`` takes only a path (so the adapter sets the
  attribute itself, and refreshes the noise profile as that method does when ``noise_reduce`` is on);
  ``forward(text, ...)`` returns the 48 kHz wave as a tensor; ``read_to_file`` writes 48 kHz.
- **v3.x** (checked at v3.1.2) ``InferenceInterfaces/ToucanTTSInterface.py``: ``ToucanTTSInterface(device="cpu",
  tts_model_path=None, vocoder_model_path=None, language="eng")``; ``default_utterance_embedding`` is the
  checkpoint's ``default_emb`` (192 = ECAPA); ``set_utterance_embedding(self, path_to_reference_audio="",
  embedding=None)`` takes a tensor; ``forward(text, ...)`` returns ``(wave, sample_rate)`` (24 kHz).

The kind of interface is detected from the interface (the signature of ``set_utterance_embedding``: v3.x
takes ``embedding``; v2.2 has ``mel2wav``), its space from the checkpoint's ``default_emb`` length — never
from a flag. A generator of another profile or dimension is refused with both named.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.profiles import Profile, get_profile

# (interface family, checkpoint default_emb length) -> profile of that conditioning space
SUPPORTED = {("v2.2", 704): "toucan-v2.2", ("v3", 192): "toucan-v3"}
FAMILY_NAMES = {"v2.2": "Toucan v2.2 InferenceFastSpeech2", "v3": "Toucan v3.x ToucanTTSInterface"}
V22_SAMPLE_RATE = 48000  # hard-coded in v2.2's read_to_file / read_aloud

MODELS_HELP = {
    "v2.2": "the v2.2 release models (https://github.com/DigitalPhonetics/IMS-Toucan/releases/tag/v2.2: "
            "FastSpeech2_Meta/best.pt and HiFiGAN_combined/best.pt, placed in <toucan-dir>/Models/)",
    "v3": "the v3 models from the Hugging Face repository Flux9665/ToucanTTS (ToucanTTS.pt and Vocoder.pt, e.g. "
          "`huggingface-cli download Flux9665/ToucanTTS ToucanTTS.pt Vocoder.pt`)",
}


def interface_family(interface) -> str:
    """'v2.2' or 'v3', from the interface's own attributes and method signature."""
    name = type(interface).__name__
    set_emb = getattr(interface, "set_utterance_embedding", None)
    if set_emb is None or not hasattr(interface, "default_utterance_embedding"):
        raise SpeakEmbError(f"{name} is not a Toucan inference interface (no set_utterance_embedding / "
                            f"default_utterance_embedding)")
    params = inspect.signature(set_emb).parameters
    if "embedding" in params and hasattr(interface, "vocoder"):
        return "v3"
    if list(params) == ["path_to_reference_audio"] and hasattr(interface, "mel2wav"):
        return "v2.2"
    raise SpeakEmbError(f"{name} is a Toucan interface this adapter does not know (supported: Toucan v2.2 "
                        f"InferenceFastSpeech2, Toucan v3.x ToucanTTSInterface)")


def checkpoint_embedding_dim(checkpoint: Union[str, os.PathLike, Dict[str, Any], int]) -> int:
    """Length of ``checkpoint["default_emb"]``: the space the Toucan model was trained in (an int is that
    length, already read)."""
    if isinstance(checkpoint, (int, np.integer)):
        return int(checkpoint)
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
    return int(np.prod(tuple(checkpoint["default_emb"].shape)))


class ToucanAdapter:
    """Wraps a Toucan inference interface; ``voice(embedding)`` conditions the utterances made inside it.

    ``checkpoint`` (path, loaded dict, or the length of its ``default_emb``) names the model's space; without it the
    interface's current ``default_utterance_embedding`` is used, which its constructor set from the same
    checkpoint entry.
    """

    def __init__(self, interface, checkpoint: Union[str, os.PathLike, Dict[str, Any], int, None] = None):
        self.interface = interface
        self.family = interface_family(interface)
        if checkpoint is not None:
            self.dim = checkpoint_embedding_dim(checkpoint)
        else:
            self.dim = int(np.prod(tuple(interface.default_utterance_embedding.shape)))
        current = int(np.prod(tuple(interface.default_utterance_embedding.shape)))
        if current != self.dim:
            raise SpeakEmbError(f"the interface holds a {current}-dim embedding but its checkpoint's default_emb is "
                                f"{self.dim}-dim")
        key = (self.family, self.dim)
        if key not in SUPPORTED:
            raise SpeakEmbError(f"{FAMILY_NAMES[self.family]} with a {self.dim}-dim checkpoint default_emb is not a "
                                f"supported space (supported: v2.2 with 704, v3.x with 192)")
        self.profile: Profile = get_profile(SUPPORTED[key])

    def describe(self) -> str:
        return f"{FAMILY_NAMES[self.family]} (checkpoint default_emb {self.dim}-dim, profile '{self.profile.name}')"

    def check_generator(self, generator) -> None:
        """Refuse a generator whose profile or dimension is not the Toucan model's, naming both."""
        p = generator.profile
        if p.name != self.profile.name or p.dim != self.profile.dim:
            raise SpeakEmbError(f"generator {generator.path} is in profile '{p.name}' ({p.dim}-dim) but the Toucan "
                                f"model is {self.describe()}")

    # ---- injection ---------------------------------------------------------------------------------------
    def _snapshot(self):
        it = self.interface
        return it.default_utterance_embedding, getattr(it, "prototypical_noise", None)

    def _restore(self, snap) -> None:
        it = self.interface
        it.default_utterance_embedding = snap[0]
        if self.family == "v2.2" and getattr(it, "noise_reduce", False):
            it.prototypical_noise = snap[1]

    def inject(self, embedding) -> None:
        """Condition the following utterances on ``embedding`` (array-like of the model's dimension)."""
        import torch

        t = torch.as_tensor(np.asarray(embedding, dtype=np.float32).reshape(-1))
        if t.numel() != self.dim:
            raise SpeakEmbError(f"embedding is {t.numel()}-dim but the Toucan model is {self.describe()}")
        if not torch.isfinite(t).all():
            raise SpeakEmbError("embedding contains NaN or infinite values")
        it = self.interface
        if self.family == "v3":
            it.set_utterance_embedding(embedding=t)
        else:  # v2.2's setter takes only an audio path: do what it does after computing the embedding
            it.default_utterance_embedding = t.to(it.device)
            if getattr(it, "noise_reduce", False):
                it.update_noise_profile()

    @contextlib.contextmanager
    def voice(self, embedding):
        """``with adapter.voice(e): ...``: utterances inside use ``e``; the previous embedding comes back after."""
        snap = self._snapshot()
        self.inject(embedding)
        try:
            yield self
        finally:
            self._restore(snap)

    # ---- synthesis -----------------------------------------------------------------------------------------
    def synthesize(self, text: str, **kwargs) -> Tuple[np.ndarray, int]:
        """One utterance with the current embedding: (float32 wave, sample rate)."""
        out = self.interface(text, **kwargs)
        if self.family == "v3":
            wave, sr = out[0], int(out[1])
        else:
            wave, sr = out, V22_SAMPLE_RATE
        if hasattr(wave, "detach"):
            wave = wave.detach().cpu().numpy()
        return np.asarray(wave, dtype=np.float32).reshape(-1), sr


def write_wav(path: Union[str, os.PathLike], wave: np.ndarray, sr: int) -> Path:
    """16-bit PCM wav, written atomically (Toucan v3 writes PCM_16 too)."""
    import soundfile as sf

    from toucan_speakemb.core.fileio import atomic_write_bytes

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, np.float32), -1.0, 1.0), int(sr), format="WAV", subtype="PCM_16")
    return atomic_write_bytes(path, buf.getvalue())


# ---- building an interface from a checkout ---------------------------------------------------------------
def checkout_family(toucan_dir: Path) -> str:
    if (toucan_dir / "InferenceInterfaces" / "InferenceFastSpeech2.py").is_file():
        return "v2.2"
    if (toucan_dir / "InferenceInterfaces" / "ToucanTTSInterface.py").is_file() and (toucan_dir / "Modules").is_dir():
        return "v3"
    raise SpeakEmbError(f"{toucan_dir} is not an IMS-Toucan v2.2 or v3.x checkout (no "
                        f"InferenceInterfaces/InferenceFastSpeech2.py or InferenceInterfaces/ToucanTTSInterface.py); "
                        f"get one with `git clone --branch v3.1.2 https://github.com/DigitalPhonetics/IMS-Toucan`")


def default_model_paths(toucan_dir: Path, family: str) -> Tuple[Optional[Path], Optional[Path]]:
    """Where Toucan itself looks for its models when none are named."""
    if family == "v2.2":
        return toucan_dir / "Models" / "FastSpeech2_Meta" / "best.pt", toucan_dir / "Models" / "HiFiGAN_combined" / "best.pt"
    try:  # v3 downloads from the hub; use the files only if they are already in the local cache
        from huggingface_hub import try_to_load_from_cache

        found = [try_to_load_from_cache("Flux9665/ToucanTTS", f) for f in ("ToucanTTS.pt", "Vocoder.pt")]
        return tuple(Path(f) if isinstance(f, str) else None for f in found)  # type: ignore[return-value]
    except ImportError:
        return None, None


@contextlib.contextmanager
def _working_dir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class ToucanModels:
    """A Toucan checkout and the model files to build its interface from, checked before anything is loaded.

    Everything missing (checkout, TTS model, vocoder) is named in one error line with where to get it.
    """

    def __init__(self, toucan_dir: Union[str, os.PathLike, None], tts_model: Union[str, os.PathLike, None] = None,
                 vocoder: Union[str, os.PathLike, None] = None):
        if toucan_dir is None:
            raise SpeakEmbError("no Toucan checkout: give --toucan-dir DIR (or set TOUCAN_DIR); get one with `git clone "
                                "--branch v3.1.2 https://github.com/DigitalPhonetics/IMS-Toucan` (or --branch v2.2)")
        root = Path(toucan_dir).expanduser().absolute()
        if not root.is_dir():
            raise SpeakEmbError(f"Toucan checkout {root} does not exist; get one with `git clone --branch v3.1.2 "
                                f"https://github.com/DigitalPhonetics/IMS-Toucan {root}` (or --branch v2.2)")
        self.root, self.family = root, checkout_family(root)
        d_tts, d_voc = default_model_paths(root, self.family)
        self.tts = Path(tts_model).expanduser().resolve() if tts_model else d_tts
        self.vocoder = Path(vocoder).expanduser().resolve() if vocoder else d_voc
        for what, p, flag in (("TTS model", self.tts, "--tts-model"), ("vocoder", self.vocoder, "--vocoder")):
            if p is None or not p.is_file():
                where = f"{p} does not exist" if p is not None else "none given and none in the Hugging Face cache"
                raise SpeakEmbError(f"no {what} for the Toucan {self.family} checkout {root} ({where}): give {flag} "
                                    f"PATH; get {MODELS_HELP[self.family]}")
        self.dim = checkpoint_embedding_dim(self.tts)
        if (self.family, self.dim) not in SUPPORTED:
            raise SpeakEmbError(f"TTS model {self.tts} has a {self.dim}-dim default_emb, which the {self.family} "
                                f"checkout's interface does not take (supported: v2.2 with 704, v3.x with 192)")
        self.profile = get_profile(SUPPORTED[(self.family, self.dim)])

    def describe(self) -> Dict[str, Any]:
        return {"family": self.family, "checkout": str(self.root), "tts_model": str(self.tts),
                "vocoder": str(self.vocoder), "default_emb_dim": self.dim, "profile": self.profile.name}

    def check_generator(self, generator) -> None:
        p = generator.profile
        if p.name != self.profile.name or p.dim != self.profile.dim:
            raise SpeakEmbError(f"generator {generator.path} is in profile '{p.name}' ({p.dim}-dim) but the Toucan "
                                f"model {self.tts} is {FAMILY_NAMES[self.family]} with a {self.dim}-dim default_emb "
                                f"('{self.profile.name}')")

    def _check_single_checkout(self) -> None:
        # Toucan's top-level packages (InferenceInterfaces, Preprocessing, ...) differ between releases
        mod = sys.modules.get("InferenceInterfaces")
        where = getattr(mod, "__file__", None) or next(iter(getattr(mod, "__path__", [])), None) if mod else None
        if where and not Path(where).absolute().is_relative_to(self.root):
            raise SpeakEmbError(f"another Toucan checkout ({Path(where).parent.parent}) is already imported in this "
                                f"process; use one checkout per process")
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))

    def load(self, device: str = "cpu", language: Optional[str] = None) -> ToucanAdapter:
        """Build the checkout's own inference interface on these files and wrap it.

        v2.2 reads its models from fixed places under ``Models/`` of the working folder: it is built in a
        temporary folder whose ``Models/`` links to the given files. v3.x is built with the checkout as
        working folder, where Toucan keeps (or downloads, on first use) SpeechBrain's ECAPA model.
        """
        self._check_single_checkout()
        try:
            with tempfile.TemporaryDirectory(prefix="toucan_speakemb_") as tmp:
                if self.family == "v2.2":
                    from InferenceInterfaces.InferenceFastSpeech2 import InferenceFastSpeech2

                    models = Path(tmp) / "Models"
                    (models / "FastSpeech2_speakemb").mkdir(parents=True)
                    (models / "HiFiGAN_combined").mkdir()
                    os.symlink(self.tts, models / "FastSpeech2_speakemb" / "best.pt")
                    os.symlink(self.vocoder, models / "HiFiGAN_combined" / "best.pt")
                    with _working_dir(Path(tmp)):
                        interface = InferenceFastSpeech2(device=device, model_name="speakemb", language=language or "en")
                else:
                    from InferenceInterfaces.ToucanTTSInterface import ToucanTTSInterface

                    # the interface takes a path ending in .pt as a file, anything else as a model shorthand
                    tts_pt = self.tts if self.tts.suffix == ".pt" else Path(tmp) / "tts.pt"
                    if tts_pt != self.tts:
                        os.symlink(self.tts, tts_pt)
                    with _working_dir(self.root):
                        interface = ToucanTTSInterface(device=device, tts_model_path=str(tts_pt),
                                                       vocoder_model_path=str(self.vocoder), language=language or "eng")
        except ImportError as e:
            raise SpeakEmbError(f"the Toucan {self.family} checkout {self.root} cannot be imported ({e}); install "
                                f"its requirements (see its requirements.txt)") from None
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            hint = ""
            if self.family == "v3" and not (self.root / "Models" / "Embedding").is_dir():
                hint = ("; Toucan v3 loads SpeechBrain's spkrec-ecapa-voxceleb into "
                        f"{self.root}/Models/Embedding/speechbrain_speaker_embedding_ecapa: run it once with internet "
                        "access or copy that model folder there")
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise SpeakEmbError(f"building Toucan's {self.family} interface failed ({first}){hint}") from None
        return ToucanAdapter(interface, self.dim)


def load_interface(toucan_dir, tts_model=None, vocoder=None, device: str = "cpu",
                   language: Optional[str] = None) -> ToucanAdapter:
    """``ToucanModels(toucan_dir, tts_model, vocoder).load(device, language)``."""
    return ToucanModels(toucan_dir, tts_model, vocoder).load(device, language)
