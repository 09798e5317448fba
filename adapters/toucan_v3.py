"""Toucan v3.x: ``ToucanTTSInterface``, conditioned on 192 = ECAPA (profile ``toucan-v3``).

What it relies on, read from IMS-Toucan's source at the tags named (no Toucan code is copied here),
``InferenceInterfaces/ToucanTTSInterface.py``:

- ``ToucanTTSInterface(device="cpu", tts_model_path=..., vocoder_model_path=..., language="eng")``: the
  checkpoint's ``default_emb`` (192 = ECAPA) is ``default_utterance_embedding``;
  ``set_utterance_embedding(self, path_to_reference_audio="", embedding=None)`` takes a tensor; ``forward``
  returns ``(wave, 24000)`` — or ``(wave, sr, plot path)`` with ``return_plot_as_filepath``, and from v3.1.2
  ``(wave, mel, durations, pitch)`` with ``return_everything`` (the adapter takes the wave and knows the
  rate). The constructor loads SpeechBrain's ECAPA into ``Models/Embedding/`` of the working folder, so the
  interface is built with the checkout as working folder.
- v3.0: the classes live in ``Architectures/`` (later ``Modules/``); the constructor loads an AudioSeal
  watermark generator from ``Models/audioseal/generator.pth`` and ``forward`` takes
  ``glow_sampling_temperature``; the vocoder returns three values. Default models
  ``Models/ToucanTTS_Meta/best.pt`` and ``Models/Vocoder/best.pt`` (what its ``run_model_downloader.py`` writes).
- v3.1: ``Modules/``, ``prosody_creativity``, no watermark; the vocoder still returns three values
  (``wave, _, _ = self.vocoder(...)``); same default models.
- v3.1.1: the vocoder returns the wave alone; same default models.
- v3.1.2: ``tts_model_path=None`` / ``vocoder_model_path=None`` download ``ToucanTTS.pt`` and ``Vocoder.pt``
  from the Hugging Face repository Flux9665/ToucanTTS; ``forward`` gains ``return_everything``. The later
  head of the default branch (MassiveScaleToucan) has the same interface and is recognised as v3.1.2.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from toucan_speakemb.core.toucan_checkout import working_dir

from toucan_speakemb.adapters.releases import Release, register

# small sizes for fast tests (same layer types; the checkpoint's config records them)
SMALL = dict(attention_dimension=96, attention_heads=4, encoder_layers=2, encoder_units=256, decoder_layers=2,
             decoder_units=256)
SMALL_FLOW_MATCHING = dict(cfm_filter_channels=64, cfm_heads=2, cfm_layers=1)  # v3.1 and later
SMALL_GLOW = dict(glow_blocks=2, glow_layers=2)  # v3.0


class ToucanV3(Release):
    family = "v3"
    interface = "ToucanTTSInterface"
    interface_file = "InferenceInterfaces/ToucanTTSInterface.py"
    profile = "toucan-v3"
    sample_rate = 24000
    language = "eng"
    classes = "Modules"  # the package holding ToucanTTS and the vocoder

    def checkout_layout(self, root: Path) -> bool:
        # v2.5/v2.b also have a ToucanTTSInterface, beside InferenceInterfaces/InferenceArchitectures
        return (root / self.classes).is_dir() and not (root / "InferenceInterfaces" / "InferenceArchitectures").is_dir()

    def default_models(self, root: Path) -> Tuple[Optional[Path], Optional[Path]]:
        return root / "Models" / "ToucanTTS_Meta" / "best.pt", root / "Models" / "Vocoder" / "best.pt"

    def models_help(self) -> str:
        return (f"the {self.name} models with the checkout's own `python run_model_downloader.py` (it writes "
                f"Models/ToucanTTS_Meta/best.pt and Models/Vocoder/best.pt)")

    def build(self, root, tts, vocoder, device, language):
        from InferenceInterfaces.ToucanTTSInterface import ToucanTTSInterface

        with tempfile.TemporaryDirectory(prefix="toucan_speakemb_") as tmp:
            # the interface takes a path ending in .pt as a file, anything else as a model shorthand
            tts_pt = tts if tts.suffix == ".pt" else Path(tmp) / "tts.pt"
            if tts_pt != tts:
                os.symlink(tts, tts_pt)
            with working_dir(root):
                return ToucanTTSInterface(device=device, tts_model_path=str(tts_pt), vocoder_model_path=str(vocoder),
                                          language=language or self.language)

    def build_failure_hint(self, root: Path) -> str:
        if (root / "Models" / "Embedding").is_dir():
            return ""
        return ("; Toucan v3 loads SpeechBrain's spkrec-ecapa-voxceleb into "
                f"{root}/Models/Embedding/speechbrain_speaker_embedding_ecapa: run it once with internet access or "
                "copy that model folder there")

    def inject(self, interface, embedding, noise_profiles: dict) -> None:
        interface.set_utterance_embedding(embedding=embedding)

    def read_output(self, out):
        # (wave, sr), (wave, sr, plot path) or (wave, mel, durations, pitch): the wave is first, the rate fixed
        return out[0], self.sample_rate

    def build_random(self, folder: Path, seed: int = 0, small: bool = False) -> Tuple[Path, Path]:
        """The release's own ToucanTTS (the training class, whose ``config`` the checkpoint carries, saved as
        its train loop does: ``{"model", "config", "default_emb"}``) and HiFiGAN (its state dict)."""
        import importlib

        import torch

        ToucanTTS = importlib.import_module(f"{self.classes}.ToucanTTS.ToucanTTS").ToucanTTS
        HiFiGAN = importlib.import_module(f"{self.classes}.Vocoder.HiFiGAN_Generator").HiFiGAN
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        model = ToucanTTS(**(self.small_sizes() if small else {}))
        tts = folder / "ToucanTTS_random.pt"
        torch.save({"model": model.state_dict(), "config": model.config, "default_emb": torch.randn(192)}, tts)
        voc = folder / "Vocoder_random.pt"
        torch.save(HiFiGAN().state_dict(), voc)
        return tts, voc

    def small_sizes(self):
        return dict(SMALL, **SMALL_FLOW_MATCHING)


class ToucanV30(ToucanV3):
    classes = "Architectures"

    def environment_problem(self) -> Optional[str]:
        import numpy

        if int(numpy.__version__.split(".")[0]) < 2:
            return None
        return (f"Toucan v3.0 cannot run with NumPy >= 2 (this environment has {numpy.__version__}): its loudness "
                f"normalisation then returns float64 audio, which its AudioSeal watermark refuses, so every "
                f"utterance longer than 0.4 s fails inside Toucan; v3.0 pins numpy~=1.23.4: use an environment "
                f"with numpy<2, or Toucan v3.1 or later")

    def small_sizes(self):
        return dict(SMALL, **SMALL_GLOW)

    def offline_files(self, folder: Path) -> None:
        """A random-weight AudioSeal watermark generator where the constructor loads the released one."""
        import torch
        from audioseal.builder import create_generator
        from omegaconf import OmegaConf

        target = folder / "Models" / "audioseal" / "generator.pth"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            conf = OmegaConf.load(str(folder / "InferenceInterfaces" / "audioseal_wm_16bits.yaml"))
            torch.save({"model": create_generator(conf).state_dict()}, target)


class ToucanV312(ToucanV3):
    def default_models(self, root: Path) -> Tuple[Optional[Path], Optional[Path]]:
        """The interface downloads from the hub; the files are used only if they are in the local cache."""
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None, None
        found = [try_to_load_from_cache("Flux9665/ToucanTTS", f) for f in ("ToucanTTS.pt", "Vocoder.pt")]
        return tuple(Path(f) if isinstance(f, str) else None for f in found)  # type: ignore[return-value]

    def models_help(self) -> str:
        return ("the v3.1.2 models from the Hugging Face repository Flux9665/ToucanTTS (ToucanTTS.pt and Vocoder.pt, "
                "e.g. `huggingface-cli download Flux9665/ToucanTTS ToucanTTS.pt Vocoder.pt`)")


def _prosody(f) -> bool:
    return "prosody_creativity" in f.params("forward")


register(
    ToucanV30("v3.0", lambda f: "glow_sampling_temperature" in f.params("forward"),
              "Architectures/, AudioSeal watermark, glow_sampling_temperature"),
    ToucanV3("v3.1", lambda f: _prosody(f) and f.default("__init__", "tts_model_path") is not None
             and f.unpacked_calls.get("vocoder") == 3, "Modules/, the vocoder returns three values"),
    ToucanV3("v3.1.1", lambda f: _prosody(f) and f.default("__init__", "tts_model_path") is not None
             and f.unpacked_calls.get("vocoder", 1) == 1, "the vocoder returns the wave; models under Models/"),
    ToucanV312("v3.1.2", lambda f: _prosody(f) and f.default("__init__", "tts_model_path") is None,
               "models from the Hugging Face hub by default; return_everything"),
)
