"""Audio trees for the listening-test specifications: short espeak-ng speech in the layout users have."""

from __future__ import annotations

from pathlib import Path

from conftest import speak

WORDS = ["one two", "three four"]


def make_audio_tree(root: Path, systems=("generated", "baseline_gaussian"), voices=2, utts=2,
                    reference=True) -> tuple[Path, Path | None]:
    """AUDIO/<system>/<voice>_u<k>.wav for each system, and REAL/r<v>_u<k>.wav; voices differ by espeak
    voice so that the files are distinct audio. Returns (audio folder, reference folder or None)."""
    audio = root / "audio"
    espeak_voices = ["en+m1", "en+f3", "en+m3", "en+f2", "en-us+m2", "en-us+f4"]
    for si, system in enumerate(systems):
        for v in range(voices):
            for u in range(utts):
                speak(audio / system / f"v{v}_u{u}.wav", WORDS[u % len(WORDS)],
                      voice=espeak_voices[(si * voices + v) % len(espeak_voices)], speed=220)
    real = None
    if reference:
        real = root / "real"
        for v in range(voices):
            for u in range(utts):
                speak(real / f"r{v}_u{u}.wav", WORDS[u % len(WORDS)], voice=espeak_voices[-1 - v], speed=200)
    return audio, real
