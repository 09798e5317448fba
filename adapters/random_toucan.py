"""Toucan's own TTS and vocoder architectures with random weights, saved in the checkpoint layout its
inference interfaces load: for tests and benchmarks on machines without Toucan's released models.

Call these with a Toucan checkout on ``sys.path`` (its top-level packages are imported from there); each
release's architectures are built by the release's own classes, nothing of Toucan is copied here.

- v2.2: ``InferenceInterfaces.InferenceArchitectures.InferenceFastSpeech2.FastSpeech2`` (default sizes,
  which is what ``InferenceFastSpeech2`` builds) saved as ``{"model": state_dict, "default_emb": (704,)}``
  (the layout of v2.2's ``fastspeech2_train_loop``), and ``InferenceHiFiGAN.HiFiGANGenerator`` saved as
  ``{"generator": state_dict}`` (``hifigan_train_loop``). The inference classes load weights inside their
  constructors, so they are built with that one step skipped.
- v3.x: ``Modules.ToucanTTS.ToucanTTS.ToucanTTS`` (the training class, whose ``config`` dict the checkpoint
  carries) saved as ``{"model": state_dict, "config": model.config, "default_emb": (192,)}``
  (``toucantts_train_loop``), and ``Modules.Vocoder.HiFiGAN_Generator.HiFiGAN`` saved as its state dict.

Random weights predict arbitrary durations; so that an utterance has a short, fixed length, the v2.2
duration predictor's output layer is set to five frames per phone (``fixed_frames_per_phone``).
v3.x's durations come from a flow-matching sampler and are left random.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

# small v3 sizes for fast tests (same layer types; the checkpoint's config records them)
V3_SMALL = dict(attention_dimension=96, attention_heads=4, encoder_layers=2, encoder_units=256, decoder_layers=2,
                decoder_units=256, cfm_filter_channels=64, cfm_heads=2, cfm_layers=1)


def _unloaded(cls):
    """The class with ``load_state_dict`` made a no-op, so its constructor keeps the random initialisation."""
    return type(f"Random{cls.__name__}", (cls,), {"load_state_dict": lambda self, *a, **k: None})


def build_v22(folder, seed: int = 0, fixed_frames_per_phone: Optional[int] = 5) -> Tuple[Path, Path]:
    """Random-weight Toucan v2.2 FastSpeech2 (704-dim conditioning) and HiFiGAN: (tts path, vocoder path)."""
    import torch
    from InferenceInterfaces.InferenceArchitectures.InferenceFastSpeech2 import FastSpeech2
    from InferenceInterfaces.InferenceArchitectures.InferenceHiFiGAN import HiFiGANGenerator

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sd = _unloaded(FastSpeech2)(weights=None).state_dict()
    if fixed_frames_per_phone is not None:  # the predictor outputs log(frames + offset 1)
        sd["duration_predictor.linear.weight"].zero_()
        sd["duration_predictor.linear.bias"].fill_(math.log(fixed_frames_per_phone + 1.0))
    tts = folder / "FastSpeech2_random.pt"
    torch.save({"model": sd, "default_emb": torch.randn(704)}, tts)
    with tempfile.TemporaryDirectory() as tmp:  # its constructor reads a file before loading from it
        empty = os.path.join(tmp, "empty.pt")
        torch.save({"generator": {}}, empty)
        voc_sd = _unloaded(HiFiGANGenerator)(path_to_weights=empty).state_dict()
    voc = folder / "HiFiGAN_random.pt"
    torch.save({"generator": voc_sd}, voc)
    return tts, voc


def build_v3(folder, seed: int = 0, small: bool = False, **sizes) -> Tuple[Path, Path]:
    """Random-weight Toucan v3.x ToucanTTS (192-dim conditioning) and HiFiGAN: (tts path, vocoder path)."""
    import torch
    from Modules.ToucanTTS.ToucanTTS import ToucanTTS
    from Modules.Vocoder.HiFiGAN_Generator import HiFiGAN

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    kw: Dict = dict(V3_SMALL) if small else {}
    kw.update(sizes)
    model = ToucanTTS(**kw)
    tts = folder / "ToucanTTS_random.pt"
    torch.save({"model": model.state_dict(), "config": model.config, "default_emb": torch.randn(192)}, tts)
    voc = folder / "Vocoder_random.pt"
    torch.save(HiFiGAN().state_dict(), voc)
    return tts, voc


def offline_v3_checkout(checkout, folder, ecapa_model_dir) -> Path:
    """A view of a v3 checkout (symlinks to its entries) whose ``Models/Embedding`` holds a local SpeechBrain
    ECAPA folder: ``ToucanTTSInterface`` loads its ECAPA encoder from there (SpeechBrain uses files already
    in the save folder) instead of downloading it, and the checkout itself is not written to."""
    checkout, folder = Path(checkout).resolve(), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in checkout.iterdir():
        if entry.name != "Models" and not (folder / entry.name).exists():
            os.symlink(entry, folder / entry.name)
    target = folder / "Models" / "Embedding" / "speechbrain_speaker_embedding_ecapa"
    target.mkdir(parents=True, exist_ok=True)
    for f in Path(ecapa_model_dir).iterdir():
        # SpeechBrain's Pretrainer keeps each loadable in the save folder as <name>.ckpt (label_encoder.txt too)
        for name in {f.name, f"{f.stem}.ckpt" if f.suffix == ".txt" else f.name}:
            if not (target / name).exists():
                os.symlink(f.resolve(), target / name)
    return folder
