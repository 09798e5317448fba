"""Toucan's own TTS and vocoder architectures with random weights, saved in the checkpoint layout its
inference interfaces load: for tests and benchmarks on machines without Toucan's released models.

Each release's architectures are built by the release's own classes (``Release.build_random`` in the family
modules), imported from the checkout by the one rule of :mod:`toucan_speakemb.core.toucan_checkout`; nothing
of Toucan is copied here.

Random weights predict arbitrary durations; so that an utterance has a short, fixed length, the v2.x
duration predictor's output layer is set to five frames per phone. v3.x's durations come from a sampler
and are left random.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

from toucan_speakemb.core.toucan_checkout import checkout_code

from toucan_speakemb.adapters.releases import release_of_checkout


def unloaded(cls):
    """The class with ``load_state_dict`` made a no-op, so its constructor keeps the random initialisation."""
    return type(f"Random{cls.__name__}", (cls,), {"load_state_dict": lambda self, *a, **k: None})


def build_random(checkout, folder, seed: int = 0, small: bool = False) -> Tuple[Path, Path]:
    """Random-weight TTS model and vocoder of the checkout's release: (tts path, vocoder path). ``small``:
    narrower layers where the release allows (v3.x), for fast tests."""
    release = release_of_checkout(Path(checkout))
    with checkout_code(checkout, f"Toucan {release.name} checkout"):
        return release.build_random(Path(folder), seed=seed, small=small)


def offline_checkout(checkout, folder, ecapa_model_dir) -> Path:
    """A view of a checkout (symlinks to its entries) whose ``Models/Embedding`` holds a local SpeechBrain
    ECAPA folder: v3's ``ToucanTTSInterface`` loads its ECAPA encoder from there (SpeechBrain uses files
    already in the save folder) instead of downloading it, plus what else the release loads at construction
    (``Release.offline_files``); the checkout itself is not written to."""
    release = release_of_checkout(Path(checkout))
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
    release.offline_files(folder)
    return folder
