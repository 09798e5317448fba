"""Toucan v2.0–v2.2: ``InferenceFastSpeech2``, conditioned on 704 = ECAPA 192 ⊕ x-vector 512 (profile
``toucan-v2.2``).

What it relies on, read from IMS-Toucan's source at the tags named (no Toucan code is copied here),
``InferenceInterfaces/InferenceFastSpeech2.py``:

- ``InferenceFastSpeech2(device="cpu", model_name="Meta", language="en"[, noise_reduce=False])`` loads
  ``Models/FastSpeech2_<model_name>/best.pt`` and ``Models/HiFiGAN_combined/best.pt`` relative to the working
  folder (where the release's README says to put the release models), keeps the checkpoint's ``default_emb``
  in ``default_utterance_embedding``; ``set_utterance_embedding(self, path_to_reference_audio)`` takes only a
  path, so the adapter sets the attribute itself; ``forward`` returns the 48 kHz wave as a tensor.
- v2.0: no ``noise_reduce``. v2.1: ``noise_reduce`` (a noise profile made by synthesising 200 pause symbols
  with the current voice, ``update_noise_profile``). v2.2: ``forward`` gains ``duration_scaling_factor``,
  ``pitch_variance_scale`` and ``energy_variance_scale``.
- The architectures: ``InferenceInterfaces.InferenceArchitectures.InferenceFastSpeech2.FastSpeech2`` and
  ``InferenceHiFiGAN.HiFiGANGenerator`` (checkpoints ``{"model": ..., "default_emb": ...}`` and
  ``{"generator": ...}``), the same at all three tags.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from toucan_speakemb.core.toucan_checkout import working_dir

from toucan_speakemb.adapters.releases import Release, register
from toucan_speakemb.adapters.random_toucan import unloaded


class PhoneTableCopies(dict):
    """A phone table whose lookups return copies, so that flags set on a returned vector stay in that text."""

    def __getitem__(self, phone):
        return list(super().__getitem__(phone))


class ToucanV2(Release):
    family = "v2"
    interface = "InferenceFastSpeech2"
    interface_file = "InferenceInterfaces/InferenceFastSpeech2.py"
    profile = "toucan-v2.2"
    sample_rate = 48000  # hard-coded in read_to_file / read_aloud / noise reduction
    language = "en"

    def default_models(self, root: Path) -> Tuple[Optional[Path], Optional[Path]]:
        return root / "Models" / "FastSpeech2_Meta" / "best.pt", root / "Models" / "HiFiGAN_combined" / "best.pt"

    def models_help(self) -> str:
        return (f"the {self.name} release models (https://github.com/DigitalPhonetics/IMS-Toucan/releases/tag/"
                f"{self.name}: FastSpeech2_Meta/best.pt and HiFiGAN_combined/best.pt, placed in <toucan-dir>/Models/)")

    def build(self, root, tts, vocoder, device, language):
        """The interface reads its models from fixed places under ``Models/`` of the working folder: it is built
        in a temporary folder whose ``Models/`` links to the given files."""
        from InferenceInterfaces.InferenceFastSpeech2 import InferenceFastSpeech2

        with tempfile.TemporaryDirectory(prefix="toucan_speakemb_") as tmp:
            models = Path(tmp) / "Models"
            (models / "FastSpeech2_speakemb").mkdir(parents=True)
            (models / "HiFiGAN_combined").mkdir()
            os.symlink(tts, models / "FastSpeech2_speakemb" / "best.pt")
            os.symlink(vocoder, models / "HiFiGAN_combined" / "best.pt")
            with working_dir(Path(tmp)):
                return InferenceFastSpeech2(device=device, model_name="speakemb", language=language or self.language)

    def inject(self, interface, embedding, noise_profiles: dict) -> None:
        """Set the embedding as ``set_utterance_embedding`` does after computing one; with ``noise_reduce`` on,
        the voice's noise profile (Toucan's ``update_noise_profile``: 200 pause symbols synthesised in that
        voice, 11x the cost of a short sentence in benchmarks/bench_synth_overhead.py) is made once per voice
        and kept in ``noise_profiles``."""
        interface.default_utterance_embedding = embedding.to(interface.device)
        if getattr(interface, "noise_reduce", False):
            key = embedding.detach().cpu().numpy().tobytes()
            if key not in noise_profiles:
                interface.update_noise_profile()
                noise_profiles[key] = interface.prototypical_noise
            interface.prototypical_noise = noise_profiles[key]

    def read_output(self, out):
        return out, self.sample_rate

    def before_utterance(self, interface) -> None:
        """v2.x's text front end (``string_to_tensor``) puts the lists of its phone table themselves, not
        copies, into a text's feature vectors and then sets the stress and length flags on them,
        so every stressed or lengthened phone stays flagged in the table for all later texts: the same text
        gets other features, and other audio, depending on what was said before (measured at v2.2: one voice
        of a batch came out up to 7 16-bit steps apart between 1 and 2 workers, its mel up to 0.2 apart).
        v3.0 fixed it by copying. The table is read through copies here; a front end made
        later (``set_language``) is wrapped before its first utterance."""
        frontend = getattr(interface, "text2phone", None)
        table = getattr(frontend, "phone_to_vector", None)
        if isinstance(table, dict) and not isinstance(table, PhoneTableCopies):
            frontend.phone_to_vector = PhoneTableCopies(table)

    def build_random(self, folder: Path, seed: int = 0, small: bool = False,
                     fixed_frames_per_phone: Optional[int] = 5) -> Tuple[Path, Path]:
        """FastSpeech2 at its default sizes (what the interface builds; ``small`` changes nothing) with the
        duration predictor's output set to ``fixed_frames_per_phone`` (random weights predict arbitrary
        durations), and HiFiGAN."""
        import torch
        from InferenceInterfaces.InferenceArchitectures.InferenceFastSpeech2 import FastSpeech2
        from InferenceInterfaces.InferenceArchitectures.InferenceHiFiGAN import HiFiGANGenerator

        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        sd = unloaded(FastSpeech2)(weights=None).state_dict()
        if fixed_frames_per_phone is not None:  # the predictor outputs log(frames + offset 1)
            sd["duration_predictor.linear.weight"].zero_()
            sd["duration_predictor.linear.bias"].fill_(math.log(fixed_frames_per_phone + 1.0))
        tts = folder / "FastSpeech2_random.pt"
        torch.save({"model": sd, "default_emb": torch.randn(704)}, tts)
        with tempfile.TemporaryDirectory() as tmp:  # its constructor reads a file before loading from it
            empty = os.path.join(tmp, "empty.pt")
            torch.save({"generator": {}}, empty)
            voc_sd = unloaded(HiFiGANGenerator)(path_to_weights=empty).state_dict()
        voc = folder / "HiFiGAN_random.pt"
        torch.save({"generator": voc_sd}, voc)
        return tts, voc


register(
    ToucanV2("v2.0", lambda f: "noise_reduce" not in f.params("__init__"),
             "InferenceFastSpeech2 without noise_reduce"),
    ToucanV2("v2.1", lambda f: "noise_reduce" in f.params("__init__")
             and "duration_scaling_factor" not in f.params("forward"),
             "noise_reduce; forward without duration_scaling_factor"),
    ToucanV2("v2.2", lambda f: "noise_reduce" in f.params("__init__") and "duration_scaling_factor" in f.params("forward"),
             "noise_reduce; forward with duration_scaling_factor"),
)
