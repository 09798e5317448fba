"""Small stand-ins for Toucan's inference interfaces, for unit tests where Toucan cannot run.

They have the real interfaces' class names, attribute names and method signatures, read from IMS-Toucan's
source at the tags named below, and load checkpoints in the same layout from the same places. What they
compute is a toy: a seeded random linear map of the utterance embedding (Linear + Softsign + L2 norm, the
way v2.2 conditions its encoder) sets the pitches of a few sines, so the wave depends on the embedding and
on the text. The v2.2 stand-in is deterministic; the v3.1.2 one adds noise drawn from torch's global
generator, scaled by ``prosody_creativity``, because the real one samples its prosody (and keeps dropout on)
at inference, and returns what the real ``forward`` returns with ``return_everything`` /
``return_plot_as_filepath``. Each call also keeps the embedding it used in ``used_embeddings``.

The real classes, with random weights, are exercised by tests/adapters/test_toucan_integration.py.

Mirrored at tag v2.2, ``InferenceInterfaces/InferenceFastSpeech2.py``::

    class InferenceFastSpeech2(torch.nn.Module):
        def __init__(self, device="cpu", model_name="Meta", language="en", noise_reduce=False)
            # torch.load(os.path.join("Models", f"FastSpeech2_{model_name}", "best.pt")) -> checkpoint["model"]
            # HiFiGANGenerator(path_to_weights=os.path.join("Models", "HiFiGAN_combined", "best.pt"))
            # attributes: device, text2phone, use_lang_id, phone2mel, mel2wav, default_utterance_embedding
            #             (= checkpoint["default_emb"]), lang_id, noise_reduce[, prototypical_noise]
        def set_utterance_embedding(self, path_to_reference_audio)
        def update_noise_profile(self)
        def set_language(self, lang_id)
        def forward(self, text, view=False, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                    energy_variance_scale=1.0, durations=None, pitch=None, energy=None, input_is_phones=False)
            # -> wave tensor, 48 kHz
        def read_to_file(self, text_list, file_location, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                         energy_variance_scale=1.0, silent=False, dur_list=None, pitch_list=None, energy_list=None)
        def read_aloud(self, text, view=False, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                       energy_variance_scale=1.0, blocking=False)

Mirrored at tag v3.1.2, ``InferenceInterfaces/ToucanTTSInterface.py``::

    class ToucanTTSInterface(torch.nn.Module):
        def __init__(self, device="cpu", tts_model_path=None, vocoder_model_path=None, language="eng")
            # checkpoint = torch.load(tts_model_path); ToucanTTS(weights=checkpoint["model"], config=checkpoint["config"])
            # vocoder: HiFiGAN().load_state_dict(torch.load(vocoder_model_path))
            # attributes: device, text2phone, phone2mel, speaker_embedding_func_ecapa, vocoder, meter,
            #             default_utterance_embedding (= checkpoint["default_emb"]), ap, lang_id
        def set_utterance_embedding(self, path_to_reference_audio="", embedding=None)
        def set_language(self, lang_id)
        def set_phonemizer_language(self, lang_id)
        def set_accent_language(self, lang_id)
        def forward(self, text, view=False, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                    energy_variance_scale=1.0, pause_duration_scaling_factor=1.0, durations=None, pitch=None,
                    energy=None, input_is_phones=False, return_plot_as_filepath=False, loudness_in_db=-29.0,
                    prosody_creativity=0.1, return_everything=False)
            # -> (wave numpy array, 24000)
        def read_to_file(self, text_list, file_location, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                         energy_variance_scale=1.0, pause_duration_scaling_factor=1.0, silent=False, dur_list=None,
                         pitch_list=None, energy_list=None, prosody_creativity=0.1)
        def read_aloud(self, text, view=False, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                       energy_variance_scale=1.0, blocking=False, prosody_creativity=0.1)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

SAMPLES_PER_CHAR = 60


class _ToyConditionedVoice(torch.nn.Module):
    """phone2mel stand-in: embedding -> 4 pitches (Linear, Softsign, L2 norm, as v2.2's encoder does)."""

    def __init__(self, utt_embed_dim: int):
        super().__init__()
        self.hs_emb_projection = torch.nn.Linear(utt_embed_dim, 4)

    def forward(self, n_samples: int, sr: int, utterance_embedding: torch.Tensor) -> torch.Tensor:
        c = torch.nn.functional.normalize(torch.nn.functional.softsign(self.hs_emb_projection(utterance_embedding)), dim=0)
        t = torch.arange(n_samples, dtype=torch.float32) / sr
        freqs = 150.0 + 100.0 * c  # Hz
        return 0.2 * torch.sin(2 * torch.pi * freqs[:, None] * t[None, :]).sum(0)


def make_checkpoint(path, dim: int, seed: int = 0, config: bool = False) -> Path:
    """A stand-in TTS checkpoint in Toucan's layout: {"model": state_dict, "default_emb": (dim,)[, "config"]}."""
    torch.manual_seed(seed)
    net = _ToyConditionedVoice(dim)
    ckpt = {"model": net.state_dict(), "default_emb": torch.randn(dim)}
    if config:
        ckpt["config"] = {"utt_embed_dim": dim}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def make_vocoder(path, v22: bool) -> Path:
    """v2.2 keeps the vocoder under "generator"; v3.x saves the state dict itself."""
    sd = {"scale": torch.ones(1)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": sd} if v22 else sd, path)
    return path


class _Common(torch.nn.Module):
    sr = 48000

    def _load(self, tts_path, voc_path, v22: bool):
        checkpoint = torch.load(tts_path, map_location="cpu", weights_only=True)
        self.phone2mel = _ToyConditionedVoice(checkpoint["default_emb"].numel())
        self.phone2mel.load_state_dict(checkpoint["model"])
        voc = torch.load(voc_path, map_location="cpu", weights_only=True)
        self.vocoder_scale = float((voc["generator"] if v22 else voc)["scale"])
        self.default_utterance_embedding = checkpoint["default_emb"].to(self.device)
        self.used_embeddings = []

    def _wave(self, text: str) -> torch.Tensor:
        # TOUCAN_STANDIN_DELAY seconds per utterance: time to kill a run in the middle (tests)
        time.sleep(float(os.environ.get("TOUCAN_STANDIN_DELAY", "0")))
        with torch.inference_mode():
            self.used_embeddings.append(self.default_utterance_embedding.detach().clone())
            n = SAMPLES_PER_CHAR * max(1, len(text))
            return self.vocoder_scale * self.phone2mel(n, self.sr, self.default_utterance_embedding)


class InferenceFastSpeech2(_Common):
    """Stand-in for Toucan v2.2 ``InferenceFastSpeech2`` (see the module docstring for what is mirrored)."""

    sr = 48000

    def __init__(self, device="cpu", model_name="Meta", language="en", noise_reduce=False):
        super().__init__()
        self.device = device
        self.text2phone = language
        self.use_lang_id = True
        self.mel2wav = torch.nn.Identity()
        self._load(os.path.join("Models", f"FastSpeech2_{model_name}", "best.pt"),
                   os.path.join("Models", "HiFiGAN_combined", "best.pt"), v22=True)
        self.lang_id = language
        self.noise_reduce = noise_reduce
        self.noise_profile_updates = 0
        if self.noise_reduce:
            self.prototypical_noise = None
            self.update_noise_profile()

    def set_utterance_embedding(self, path_to_reference_audio):
        raise NotImplementedError("the stand-in has no speaker encoder")

    def update_noise_profile(self):
        self.noise_reduce = False
        self.prototypical_noise = self("~." * 4, input_is_phones=True).cpu().numpy()
        self.noise_profile_updates += 1
        self.noise_reduce = True

    def set_language(self, lang_id):
        self.lang_id = lang_id

    def forward(self, text, view=False, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                energy_variance_scale=1.0, durations=None, pitch=None, energy=None, input_is_phones=False):
        return self._wave(text)

    def read_to_file(self, text_list, file_location, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                     energy_variance_scale=1.0, silent=False, dur_list=None, pitch_list=None, energy_list=None):
        wav = torch.cat([torch.cat([self(t).cpu(), torch.zeros(240)]) for t in text_list if t.strip()])
        soundfile.write(file=file_location, data=wav.numpy(), samplerate=48000)

    def read_aloud(self, text, view=False, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                   energy_variance_scale=1.0, blocking=False):
        raise NotImplementedError("the stand-in plays no audio")


class ToucanTTSInterface(_Common):
    """Stand-in for Toucan v3.1.2 ``ToucanTTSInterface`` (see the module docstring for what is mirrored)."""

    sr = 24000

    def __init__(self, device="cpu", tts_model_path=None, vocoder_model_path=None, language="eng"):
        super().__init__()
        if tts_model_path is None or vocoder_model_path is None:
            raise RuntimeError("the stand-in downloads nothing: give tts_model_path and vocoder_model_path")
        self.device = device
        self.text2phone = language
        self._load(tts_model_path, vocoder_model_path, v22=False)
        self.speaker_embedding_func_ecapa = None
        self.vocoder = torch.nn.Identity()
        self.meter = None
        self.ap = None
        self.lang_id = language

    def set_utterance_embedding(self, path_to_reference_audio="", embedding=None):
        if embedding is not None:
            self.default_utterance_embedding = embedding.squeeze().to(self.device)
            return
        raise NotImplementedError("the stand-in has no speaker encoder")

    def set_language(self, lang_id):
        self.lang_id = lang_id

    def set_phonemizer_language(self, lang_id):
        self.text2phone = lang_id

    def set_accent_language(self, lang_id):
        self.lang_id = lang_id

    def forward(self, text, view=False, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                energy_variance_scale=1.0, pause_duration_scaling_factor=1.0, durations=None, pitch=None,
                energy=None, input_is_phones=False, return_plot_as_filepath=False, loudness_in_db=-29.0,
                prosody_creativity=0.1, return_everything=False):
        wave = self._wave(text)
        wave = (wave + 0.05 * prosody_creativity * torch.randn(wave.shape)).numpy()
        if return_plot_as_filepath:
            return wave, 24000, "tmp.png"
        if return_everything:
            return wave, None, None, None  # the real one: wave, mel, durations, pitch
        return wave, 24000

    def read_to_file(self, text_list, file_location, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                     energy_variance_scale=1.0, pause_duration_scaling_factor=1.0, silent=False, dur_list=None,
                     pitch_list=None, energy_list=None, prosody_creativity=0.1):
        parts = [np.concatenate([self(t)[0], np.zeros(400, np.float32)]) for t in text_list if t.strip()]
        soundfile.write(file=file_location, data=np.concatenate(parts), samplerate=24000, subtype="PCM_16")

    def read_aloud(self, text, view=False, duration_scaling_factor=1.0, pitch_variance_scale=1.0,
                   energy_variance_scale=1.0, blocking=False, prosody_creativity=0.1):
        raise NotImplementedError("the stand-in plays no audio")


def make_checkout(root, family: str) -> Path:
    """A folder laid out like a Toucan checkout whose interface module is this stand-in (for CLI tests): the
    module's source, so that the release is recognised from the interface file as in a real checkout."""
    root = Path(root)
    pkg = root / "InferenceInterfaces"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    name = "InferenceFastSpeech2" if family == "v2.2" else "ToucanTTSInterface"
    (pkg / f"{name}.py").write_text(Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")
    if family == "v3":
        (root / "Modules").mkdir(exist_ok=True)
    return root
