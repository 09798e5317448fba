"""Speaker encoders: SpeechBrain ECAPA / x-vector models, and a Toucan checkout's own style embedding.

SpeechBrain models load from a model hub id (downloaded on the user's machine into a cache folder) or
from a local folder in SpeechBrain's own format (``hyperparams.yaml``, ``embedding_model.ckpt``,
``mean_var_norm_emb.ckpt``, ``classifier.ckpt``, ``label_encoder.txt``) for machines without internet.
Both go through SpeechBrain's own loader, ``EncoderClassifier.from_hparams``. A copied hub folder still
names the hub in its ``hyperparams.yaml`` (``pretrained_path: speechbrain/...``); for a local folder that
key is overridden with the folder itself, so nothing is fetched.

Batches. ``encode_batch`` takes relative lengths (``wav_lens``) so padding is ignored by the statistics,
but SpeechBrain's convolutions pad "same" with *reflection* at the end of the tensor, which in a padded
batch is not the end of a shorter utterance: its last frames would see the padding. :class:`ExactBatching`
removes that difference: before every such convolution it writes the reflection of each utterance's own
last frames into the frames after its end (what the convolution would have padded with had the utterance
been alone), and gives relative lengths that select exactly each utterance's frames. A padded batch then
gives each utterance the embedding it gets alone, within float tolerance; this is checked on every model
when it is loaded (:meth:`SpeechBrainEncoder.batching_error`), and a model that fails the check is only
given batches of equal frame counts, which are exact without any help.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from toucan_speakemb.core.distributed import resolve_device  # noqa: F401 (part of this module's API)
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.profiles import (
    KNOWN_PROFILES,
    NATIVE,
    SPEECHBRAIN_ENCODERS,
    Profile,
    extractable_profiles,
    get_profile,
)
from toucan_speakemb.core.toucan_checkout import import_from_checkout

log = logging.getLogger(__name__)

# The SpeechBrain encoders (hub ids, accepted folder names) live in the profile registry, core/profiles.py.
HUB_IDS = {name: src.hub_id for name, src in SPEECHBRAIN_ENCODERS.items()}
DIR_NAMES = {name: src.dir_names for name, src in SPEECHBRAIN_ENCODERS.items()}
SB_FILES = ("hyperparams.yaml", "embedding_model.ckpt")
POOLING_NOISE_SEED = 0  # of the x-vector's pooling noise (_seed_pooling_noise)
BATCH_TOLERANCE = 1e-3  # max relative L2 difference, batched vs one by one, for a model to be batched freely
NATIVE_STYLE_MODULE = Path("TrainingInterfaces") / "Spectrogram_to_Embedding" / "StyleEmbedding.py"
NATIVE_DEFAULT_WEIGHTS = Path("Models") / "Embedding" / "embedding_function.pt"


def default_cache_dir() -> Path:
    env = os.environ.get("TOUCAN_SPEAKEMB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "toucan_speakemb"


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _quiet_speechbrain():
    for name in ("speechbrain", "speechbrain.utils.fetching", "speechbrain.utils.parameter_transfer",
                 "speechbrain.utils.quirks"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _load_folder(loader, folder: Path, run_opts: Dict[str, Any]):
    """A SpeechBrain model from a folder in its own format, fetching nothing."""
    if not folder.is_dir():
        raise SpeakEmbError(f"encoder folder not found: {folder}")
    missing = [f for f in SB_FILES if not (folder / f).exists()]
    if missing:
        raise SpeakEmbError(f"{folder} is not a SpeechBrain model folder (missing {', '.join(missing)})")
    overrides = {}
    hp_text = (folder / "hyperparams.yaml").read_text(encoding="utf-8", errors="replace")
    if any(line.startswith("pretrained_path:") for line in hp_text.splitlines()):
        overrides["pretrained_path"] = str(folder.resolve())
    # SpeechBrain links the files into savedir; a private temporary one keeps read-only model folders
    # and concurrent jobs apart. The weights are in memory once from_hparams returns.
    with tempfile.TemporaryDirectory(prefix="speakemb-sb-") as savedir:
        try:
            return loader.from_hparams(source=str(folder.resolve()), savedir=savedir, overrides=overrides,
                                       run_opts=run_opts)
        except Exception as e:
            raise SpeakEmbError(f"could not load the SpeechBrain model in {folder} "
                                f"({type(e).__name__}: {_first_line(e)})") from None


def _seed_pooling_noise(model) -> None:
    """Make the one random draw of SpeechBrain's x-vector reproducible.

    Its statistics pooling adds noise of 1e-5 to 9e-5 to the pooled mean on every call, in eval mode too
    (``StatisticsPooling._get_gauss_noise``, ``torch.randn`` from the global generator), so the same
    utterance got another x-vector each time (measured: up to 4e-5, run to run) and a resumed extraction
    differed from an uninterrupted one. Here each row gets the noise a seeded draw gives, scaled to the same
    range, the same for every row and every call: the model's computation and noise level are kept, and an
    embedding is a function of its audio alone (on CPU bit for bit run to run, in any order, after a resume,
    for the same intra-op thread count; another count sums in another order, ~4e-7). The global random
    state is not touched. ECAPA's attentive pooling draws nothing."""
    import torch

    for module in model.modules():
        if not hasattr(module, "_get_gauss_noise"):
            continue
        eps = float(getattr(module, "eps", 1e-5))

        def noise(shape, device="cpu", eps=eps):
            row = torch.randn(int(shape[-1]), generator=torch.Generator().manual_seed(POOLING_NOISE_SEED))
            row = (row - row.min()) / (row - row.min()).max()
            return (eps * (9 - 8 * row)).expand(tuple(shape)).to(device).clone()

        module._get_gauss_noise = noise


_WARNED: set = set()
_HUB_STATE: Optional[str] = None  # why the hub is unreachable ("" when it is reachable), once asked


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def hub_cache_folder(source: str, cache_dir: Optional[Path] = None) -> Path:
    """Where a hub model is downloaded to (and read from when the hub is unreachable)."""
    return Path(cache_dir or default_cache_dir()) / "speechbrain" / source.replace("/", "--")


def offline_copy(source: str, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """None when the model hub is reachable; when it is not (one quick try instead of the hub client's
    retries with back-off), the cached copy of ``source`` with one warning, or one SpeakEmbError line."""
    unreachable = hub_unreachable()
    if unreachable is None:
        return None
    cache = hub_cache_folder(source, cache_dir)
    if not all((cache / f).exists() for f in SB_FILES):
        raise SpeakEmbError(f"could not get {source} from the model hub ({unreachable}) and it is not in the "
                            f"cache {cache}; on a machine without internet copy the model folder there and pass "
                            f"--encoder-dir")
    _warn_once(f"the model hub is unreachable ({unreachable}); using the cached copies of its models")
    return cache


def hub_unreachable(timeout: float = 5.0) -> Optional[str]:
    """Why the model hub cannot be reached (one connection attempt), or None when it can.

    ``HF_HUB_OFFLINE=1`` counts as unreachable without trying. The answer is kept for the process: a run
    loading two encoders asks once."""
    global _HUB_STATE
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if _HUB_STATE is None:
        import socket
        from urllib.parse import urlparse

        url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            _HUB_STATE = ""
        except OSError as e:
            _HUB_STATE = f"{host}: {e.strerror or type(e).__name__}"
    return _HUB_STATE or None


# ---- exact padded batches --------------------------------------------------------------------------------


class ExactBatching:
    """Forward pre-hooks that make SpeechBrain's reflect-padded 'same' convolutions batch-exact.

    ``frames`` (a LongTensor of valid frame counts per row) is set for the duration of one call; every
    hooked convolution then rewrites, for each row, the ``pad`` frames after that row's end with the
    reflection of its own last frames (``x[n + j] = x[n - 2 - j]``), exactly what the convolution's own
    reflection padding gives the row when it is alone. Rows must have at least ``pad`` frames of room after
    their end (the caller pads the batch by :attr:`max_pad` frames).
    """

    def __init__(self, model):
        import torch
        from speechbrain.nnet.CNN import Conv1d as SBConv1d

        self.convs: List[Tuple[Any, int, int]] = []  # (module, pad, time dim)
        self.unsupported: List[str] = []
        wrapped = set()  # the torch convolutions inside SpeechBrain's Conv1d wrappers
        for name, m in model.named_modules():
            if isinstance(m, SBConv1d):
                wrapped.add(id(m.conv))
                k, d, s = int(m.kernel_size), int(m.dilation), int(m.stride)
                if m.padding == "same" and s == 1:
                    pad = d * (k - 1) // 2
                    if pad == 0:
                        continue
                    if getattr(m, "padding_mode", "reflect") != "reflect" or getattr(m, "unsqueeze", False):
                        self.unsupported.append(name)
                        continue
                    self.convs.append((m, pad, -1 if m.skip_transpose else 1))
                else:
                    self.unsupported.append(name)
            elif isinstance(m, torch.nn.RNNBase) or (
                    isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) and id(m) not in wrapped
                    and max(m.kernel_size) > 1):
                self.unsupported.append(name)  # time-mixing layers the hooks do not know
        self.max_pad = max((p for _, p, _ in self.convs), default=0)
        self._frames = None

    @contextlib.contextmanager
    def active(self, frames):
        self._frames = frames
        handles = [m.register_forward_pre_hook(self._hook(pad, tdim)) for m, pad, tdim in self.convs]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self._frames = None

    def _hook(self, pad: int, tdim: int):
        import torch

        def hook(module, args):
            # In place, and only the `pad` frames after each row's end: those frames are padding, read by
            # nothing but this convolution's outputs at padding positions (masked later), so writing them
            # is safe even when `x` is shared with a residual branch, and costs B x C x pad values.
            x = args[0]
            n = self._frames.to(x.device)
            L = x.shape[tdim]
            j = torch.arange(pad, device=x.device).unsqueeze(0)  # (1, pad)
            dst = n.unsqueeze(1) + j  # (B, pad)
            src = (n.unsqueeze(1) - 2 - j).clamp(min=0)
            rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1).expand_as(dst)
            keep = dst < L
            rows, dst, src = rows[keep], dst[keep], src[keep]
            if tdim == 1:  # (B, T, C)
                x[rows, dst, :] = x[rows, src, :]
            else:  # (B, C, T)
                x[rows, :, dst] = x[rows, :, src]
            return None

        return hook


# ---- SpeechBrain encoders --------------------------------------------------------------------------------


def _file_digest(path: Path, limit: int = 1 << 62) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()[:16]


@dataclass
class SpeechBrainEncoder:
    """One SpeechBrain ``EncoderClassifier`` (ECAPA or x-vector) used for embeddings only."""

    component: str  # "ecapa" or "xvector"
    source: str  # hub id or local folder
    local: bool
    device: str = "cpu"
    cache_dir: Optional[Path] = None
    model: Any = field(default=None, repr=False)

    def __post_init__(self):
        self.model = self._load()
        _seed_pooling_noise(self.model.mods.embedding_model)
        stft = self.model.mods.compute_features.compute_STFT
        self.hop = int(stft.hop_length)
        self.center = bool(getattr(stft, "center", True))
        self.exact = ExactBatching(self.model.mods.embedding_model)
        self.dim = int(self._encode_single(self._probe_wave(16000)).shape[-1])
        err = self.batching_error()
        self.batch_exact = bool(self.center and not self.exact.unsupported and err < BATCH_TOLERANCE)
        if not self.batch_exact:
            log.warning("%s: padded batches differ from one-by-one (relative error %.2e); batching only "
                        "utterances of equal frame count", self.source, err)

    # ---- loading ------------------------------------------------------------------------------------
    def _load(self):
        _quiet_speechbrain()
        try:
            from speechbrain.inference.classifiers import EncoderClassifier
        except Exception as e:  # a broken torchaudio is the usual cause; doctor knows the repair
            raise SpeakEmbError(f"SpeechBrain cannot be imported ({_first_line(e)}); "
                                f"run: toucan-speakemb doctor") from None
        _quiet_speechbrain()
        run_opts = {"device": self.device}
        if self.local:
            return _load_folder(EncoderClassifier, Path(self.source), run_opts)
        cache = hub_cache_folder(self.source, self.cache_dir)
        if offline_copy(self.source, self.cache_dir) is not None:
            return _load_folder(EncoderClassifier, cache, run_opts)
        try:
            return EncoderClassifier.from_hparams(source=self.source, savedir=str(cache), run_opts=run_opts)
        except Exception as e:
            raise SpeakEmbError(
                f"could not get {self.source} from the model hub ({type(e).__name__}: {_first_line(e)}); "
                f"on a machine without internet copy the model folder there and pass --encoder-dir"
            ) from None

    def identity(self) -> Dict[str, str]:
        """What makes this encoder this encoder (goes into the job fingerprint and provenance)."""
        if self.local:
            folder = Path(self.source)
            return {"source": str(folder.resolve()),
                    "hyperparams_sha1": _file_digest(folder / "hyperparams.yaml"),
                    "embedding_model_sha1": _file_digest(folder / "embedding_model.ckpt")}
        return {"source": self.source}

    # ---- encoding -----------------------------------------------------------------------------------
    def _probe_wave(self, n: int, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        return 0.1 * torch.randn(n, generator=g)

    def _encode_single(self, wave):
        import torch

        with torch.inference_mode():
            return self.model.encode_batch(wave.unsqueeze(0)).reshape(1, -1).float().cpu()

    def frames(self, n_samples):
        return n_samples // self.hop + 1

    def encode(self, waves, lengths):
        """(B, T) float32 padded waves + (B,) sample counts -> (B, dim) float32 CPU tensor."""
        import torch

        B = waves.shape[0]
        if B == 1:
            return self._encode_single(waves[0, : int(lengths[0])])
        lengths = lengths.to(torch.long)
        frames = self.frames(lengths)
        need = int(lengths.max()) + (self.exact.max_pad + 1) * self.hop
        if waves.shape[1] < need:
            waves = torch.nn.functional.pad(waves, (0, need - waves.shape[1]))
        elif waves.shape[1] > need:
            waves = waves[:, :need]
        # Zero everything after each row's end (the STFT of a lone row pads with zeros there too).
        mask = torch.arange(waves.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        waves = waves * mask
        L = int(self.frames(torch.tensor(waves.shape[1])))
        rel = (frames.to(torch.float64) - 0.25) / L  # selects exactly `frames` frames in every SpeechBrain mask
        with torch.inference_mode(), self.exact.active(frames):
            out = self.model.encode_batch(waves.to(self.device), rel.to(torch.float32).to(self.device))
        return out.reshape(B, -1).float().cpu()

    def batching_error(self) -> float:
        """Max relative difference between a padded batch and one-by-one on noise of three lengths."""
        import torch

        waves = [self._probe_wave(n, seed=i + 1) for i, n in enumerate((9000, 14_250, 21_133))]
        single = torch.cat([self._encode_single(w) for w in waves])
        T = max(w.shape[0] for w in waves)
        batch = torch.zeros(len(waves), T)
        for i, w in enumerate(waves):
            batch[i, : w.shape[0]] = w
        lens = torch.tensor([w.shape[0] for w in waves])
        both = self.encode(batch, lens)
        return float(((both - single).norm(dim=1) / single.norm(dim=1).clamp(min=1e-12)).max())


# ---- profile encoders ------------------------------------------------------------------------------------


def parse_encoder_dirs(specs: Sequence[str], profile: Profile) -> Dict[str, Path]:
    """``--encoder-dir`` values -> {component: folder}.

    Each value is ``NAME=DIR`` (NAME = ecapa or xvector), or a bare DIR that is either a model folder itself
    (profiles with one encoder) or a folder holding one sub-folder per encoder, named as on the model hub
    (``spkrec-ecapa-voxceleb``, ``spkrec-xvect-voxceleb``) or plainly (``ecapa``, ``xvector``).
    """
    comps = [c for c, _ in profile.components]
    out: Dict[str, Path] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if sep and name in DIR_NAMES:
            if name not in comps:
                raise SpeakEmbError(f"--encoder-dir {spec}: profile '{profile.name}' has no '{name}' encoder "
                                    f"(it uses {' + '.join(comps)})")
            out[name] = Path(rest)
            continue
        if sep and not Path(spec).exists():
            raise SpeakEmbError(f"--encoder-dir {spec}: unknown encoder name '{name}' (use ecapa=DIR or xvector=DIR)")
        folder = Path(spec)
        if not folder.is_dir():
            raise SpeakEmbError(f"encoder folder not found: {folder}")
        if (folder / "hyperparams.yaml").exists():
            todo = [c for c in comps if c not in out]
            if len(comps) != 1 and len(todo) != 1:
                raise SpeakEmbError(
                    f"--encoder-dir {folder} is a single model folder, but profile '{profile.name}' needs "
                    f"{' + '.join(comps)}: pass ecapa=DIR and xvector=DIR, or a folder holding both")
            out[todo[0] if todo else comps[0]] = folder
            continue
        found = False
        for c in comps:
            for sub in DIR_NAMES[c]:
                if (folder / sub / "hyperparams.yaml").exists() and c not in out:
                    out[c] = folder / sub
                    found = True
                    break
        if not found:
            names = " or ".join(f"{DIR_NAMES[c][0]}/" for c in comps)
            raise SpeakEmbError(f"--encoder-dir {folder} holds no SpeechBrain model folder ({names} with a "
                                f"hyperparams.yaml)")
    missing = [c for c in comps if c not in out]
    if out and missing:
        raise SpeakEmbError(f"no local folder for the {' and '.join(missing)} encoder of profile "
                            f"'{profile.name}' (pass {missing[0]}=DIR to --encoder-dir)")
    return out


class ProfileEncoder:
    """The encoders of a Toucan profile, concatenated in the profile's order (ECAPA first for toucan-v2.2)."""

    kind = "waveform"

    def __init__(self, profile: str = "toucan-v2.2", encoder_dirs: Optional[Dict[str, Path]] = None,
                 device: str = "auto", cache_dir: Optional[Path] = None):
        self.profile = get_profile(profile)
        if self.profile.extractor != "speechbrain":
            made = [n for n in extractable_profiles() if n != NATIVE]
            raise SpeakEmbError(f"profile '{profile}' is not made from SpeechBrain encoders "
                                f"(use {' or '.join(made)}, or {NATIVE} with a Toucan checkout)")
        self.device = resolve_device(device)
        encoder_dirs = encoder_dirs or {}
        self.encoders: List[SpeechBrainEncoder] = []
        for comp, width in self.profile.components:
            if comp in encoder_dirs:
                enc = SpeechBrainEncoder(comp, str(encoder_dirs[comp]), True, self.device, cache_dir)
            else:
                enc = SpeechBrainEncoder(comp, HUB_IDS[comp], False, self.device, cache_dir)
            if enc.dim != width:
                raise SpeakEmbError(
                    f"the {comp} model from {enc.source} gives {enc.dim}-dim embeddings, but profile "
                    f"'{self.profile.name}' needs {width} for it (is it the right model?)")
            self.encoders.append(enc)
        self.dim = sum(e.dim for e in self.encoders)
        self.hop = self.encoders[0].hop
        self.batch_exact = all(e.batch_exact for e in self.encoders)

    def frontend(self, min_seconds: float):
        return WaveformFrontend(self.profile.name, min_seconds)

    def bucket_key(self, n_samples: int) -> int:
        """Utterances whose keys are equal batch exactly even without ExactBatching (same frame count)."""
        return int(n_samples) // self.hop + 1

    def encode(self, feats, lengths) -> np.ndarray:
        import torch

        parts = [e.encode(feats, lengths) for e in self.encoders]
        return torch.cat(parts, dim=1).numpy().astype(np.float32)

    def identity(self) -> Dict[str, Any]:
        return {"profile": self.profile.name,
                "encoders": {e.component: e.identity() for e in self.encoders}}


@dataclass
class WaveformFrontend:
    """Picklable per-file preprocessing for DataLoader workers: path -> 16 kHz float32 wave."""

    profile: str
    min_seconds: float

    def __call__(self, path):
        from toucan_speakemb.extract.audio import load_and_preprocess

        return load_and_preprocess(path, self.profile, self.min_seconds)


# ---- Toucan's own style embedding (toucan-native) --------------------------------------------------------


@dataclass
class ToucanNativeFrontend:
    """Per-file preprocessing done by the checkout's own ``AudioPreprocessor``: path -> mel spectrogram
    (frames, 80), exactly as its ``set_utterance_embedding`` makes it (``cut_silence`` = its Silero VAD)."""

    toucan_dir: str
    vad: bool
    min_seconds: float

    def __post_init__(self):
        self._aps = {}

    def __getstate__(self):
        return {"toucan_dir": self.toucan_dir, "vad": self.vad, "min_seconds": self.min_seconds}

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._aps = {}

    def __call__(self, path):
        import torch

        from toucan_speakemb.extract.audio import check_signal, read_audio, to_mono

        wave, sr = read_audio(path)
        check_signal(to_mono(np.asarray(wave, dtype=np.float64)), sr, self.min_seconds)
        ap = self._aps.get(sr)
        if ap is None:
            mod = import_from_checkout(self.toucan_dir, "Preprocessing.AudioPreprocessor")
            try:
                ap = mod.AudioPreprocessor(input_sr=sr, output_sr=16000, cut_silence=self.vad)
            except Exception as e:
                if self.vad:
                    raise SpeakEmbError(f"Toucan's silence cutting needs the Silero VAD from torch.hub "
                                        f"({_first_line(e)}); pass --no-toucan-vad to skip it") from None
                raise
            self._aps[sr] = ap
        spec = ap.audio_to_mel_spec_tensor(wave).transpose(0, 1)
        if not torch.isfinite(spec).all():
            from toucan_speakemb.extract.audio import BadAudio

            raise BadAudio("non-finite", "the Toucan preprocessing produced NaN or infinite values")
        return spec.float().contiguous()


class ToucanNativeEncoder:
    """A Toucan checkout's ``StyleEmbedding`` (v2.3: 128-dim, v2.4 to v2.b: 64-dim) with its weights."""

    kind = "spectrogram"

    def __init__(self, toucan_dir: Path, weights: Optional[Path] = None, device: str = "auto", vad: bool = True):
        import torch

        self.toucan_dir = Path(toucan_dir)
        if not (self.toucan_dir / NATIVE_STYLE_MODULE).exists():
            raise SpeakEmbError(f"{self.toucan_dir} is not a Toucan checkout with Toucan's own style embedding "
                                f"({NATIVE_STYLE_MODULE} is missing; that is Toucan v2.3 to v2.b)")
        self.weights = Path(weights) if weights else self.toucan_dir / NATIVE_DEFAULT_WEIGHTS
        if not self.weights.exists():
            raise SpeakEmbError(f"embedding function weights not found: {self.weights} "
                                f"(pass --toucan-embedding-model)")
        self.device = resolve_device(device)
        self.vad = vad
        mod = import_from_checkout(self.toucan_dir, "TrainingInterfaces.Spectrogram_to_Embedding.StyleEmbedding")
        try:
            ckpt = torch.load(str(self.weights), map_location="cpu", weights_only=True)
        except Exception as e:
            raise SpeakEmbError(f"{self.weights} is not a readable weights-only torch file ({_first_line(e)})") from None
        state = ckpt.get("style_emb_func") if isinstance(ckpt, dict) else None
        if state is None:
            raise SpeakEmbError(f"{self.weights} has no 'style_emb_func' entry (not a Toucan embedding function)")
        self.fn = mod.StyleEmbedding()
        try:
            self.fn.load_state_dict(state)
        except RuntimeError as e:
            raise SpeakEmbError(f"{self.weights} does not fit this checkout's StyleEmbedding "
                                f"({_first_line(e)})") from None
        self.fn.eval().to(self.device)
        with torch.inference_mode():
            probe = self.fn(torch.zeros(1, 300, 80, device=self.device), torch.LongTensor([[300]]).to(self.device))
        self.dim = int(probe.reshape(1, -1).shape[1])
        name = f"toucan-native-{self.dim}"
        if name not in KNOWN_PROFILES:
            raise SpeakEmbError(f"the Toucan style embedding in {self.toucan_dir} is {self.dim}-dim; known "
                                f"Toucan-native spaces are 64 and 128")
        self.profile = get_profile(name)
        self.batch_exact = True  # StyleEmbedding cuts every row to its own length itself

    def frontend(self, min_seconds: float):
        return ToucanNativeFrontend(str(self.toucan_dir), self.vad, min_seconds)

    def bucket_key(self, n_samples: int) -> int:
        return int(n_samples)

    def encode(self, feats, lengths) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.fn(feats.to(self.device), lengths.to(torch.long).unsqueeze(1).to(self.device))
        return out.reshape(feats.shape[0], -1).float().cpu().numpy()

    def identity(self) -> Dict[str, Any]:
        return {"profile": self.profile.name,
                "encoders": {"toucan-style": {"toucan_dir": str(self.toucan_dir.resolve()),
                                              "weights": str(self.weights.resolve()),
                                              "weights_sha1": _file_digest(self.weights),
                                              "vad": self.vad}}}


def load_encoder(profile: str = "toucan-v2.2", encoder_dirs: Optional[Dict[str, Path]] = None,
                 device: str = "auto", cache_dir: Optional[Path] = None, toucan_dir: Optional[Path] = None,
                 toucan_weights: Optional[Path] = None, toucan_vad: bool = True):
    """The encoder for a profile name (``toucan-native`` resolves to -64 or -128 from the checkout)."""
    if profile.startswith(NATIVE):
        if toucan_dir is None:
            raise SpeakEmbError("profile toucan-native needs a Toucan checkout: pass --toucan-dir")
        enc = ToucanNativeEncoder(Path(toucan_dir), toucan_weights, device, toucan_vad)
        if profile != "toucan-native" and profile != enc.profile.name:
            raise SpeakEmbError(f"asked for profile '{profile}' but the checkout's embedding is "
                                f"'{enc.profile.name}'")
        return enc
    if toucan_dir is not None:
        raise SpeakEmbError("--toucan-dir is only used by the toucan-native profile")
    if profile not in extractable_profiles():
        names = extractable_profiles()
        raise SpeakEmbError(f"extraction knows the profiles {', '.join(names[:-1])} and {names[-1]}, "
                            f"not '{profile}'")
    return ProfileEncoder(profile, encoder_dirs, device, cache_dir)
