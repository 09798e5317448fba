"""The hook for your own Toucan inference script: every utterance gets a fresh, new and distinct voice.

    from toucan_speakemb.adapters import random_voices
    with random_voices(tts, "runs/default") as voices:      # tts: your Toucan inference interface
        tts.read_to_file(["Hello there."], "hello.wav")     # every read_to_file / forward call: a new voice
    voices.save("voices.json")                               # which voice (id, seed, figures) went where

Inside the block, each top-level call of the interface's ``forward`` (also ``tts(text)``) or ``read_to_file``
draws the next voice from the generator (novelty- and distinctness-checked, see :mod:`toucan_speakemb.voices.novelty`),
conditions that call on it with Toucan's randomness seeded from the voice and the text (the one synthesis
path, :mod:`.synthesis`: the same draw seed and texts give the same audio), and records the voice id, seeds
and figures in the sidecar form of `synth`. Calls made from inside such a call
(``read_to_file`` synthesises each sentence with ``forward``) keep the voice of the outer call. On leaving
the block the interface is as before: its methods and its embedding are restored.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_json, utc_timestamp
from toucan_speakemb.core.version import __version__
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.generate.request import SamplingRequest
from toucan_speakemb.voices.novelty import DEFAULT_MAX_DRAWS, Voice, VoiceSampler

from toucan_speakemb.adapters.synthesis import Synthesis
from toucan_speakemb.adapters.toucan import ToucanAdapter

HOOKED = ("forward", "read_to_file")


class VoiceSession:
    """What a ``random_voices`` block did: one record per conditioned call."""

    def __init__(self, synthesis: Synthesis, sampler: VoiceSampler):
        self.synthesis, self.sampler = synthesis, sampler
        self.adapter = synthesis.adapter
        self.records: List[Dict[str, Any]] = []
        self.voices: List[Voice] = []
        self._depth = 0

    @staticmethod
    def call_fields(method: str, args, kwargs) -> Dict[str, Any]:
        if method == "read_to_file":
            return {"call": method, "texts": list(args[0] if args else kwargs.get("text_list", [])),
                    "file": str(args[1] if len(args) > 1 else kwargs.get("file_location"))}
        return {"call": method, "text": args[0] if args else kwargs.get("text")}

    def describe(self) -> Dict[str, Any]:
        g = self.sampler.generator
        return {"generator": {"path": str(g.path), "fingerprint": g.fingerprint}, "profile": g.profile.name,
                "toucan": self.adapter.info(), "sampling": self.sampler.provenance(),
                "toucan_speakemb_version": __version__,
                "created": utc_timestamp()}

    def save(self, path: Union[str, Path]) -> Path:
        """The session as JSON: generator, draw seed, threshold, and one record per call."""
        return atomic_write_json(path, dict(self.describe(), calls=self.records))


NOISE_REDUCE_REFUSED = (
    "the interface has noise_reduce on: Toucan makes a noise profile for every new voice by synthesising 200 "
    "pause symbols in it (measured at v2.2: 11x the cost of a short sentence), and the hook gives every call a new voice; "
    "build the interface with noise_reduce=False, or give several utterances one voice with "
    "ToucanAdapter.voice() (its noise profile is then made once)")


@contextlib.contextmanager
def random_voices(interface, generator, seed: Optional[int] = None, threshold=None,
                  bank=None, distinct: bool = True, checkpoint=None, max_draws: int = DEFAULT_MAX_DRAWS,
                  conditions: Optional[dict] = None, guidance: Optional[float] = None,
                  sliders: Optional[dict] = None, slider_method: Optional[str] = None,
                  slider_strength: Optional[float] = None, device: Optional[str] = None):
    """Give every ``forward`` / ``read_to_file`` call of a Toucan interface a fresh voice (see the module doc).

    ``generator``: a run folder, a ``generator.safetensors`` or a loaded Generator; ``seed``: the draw seed
    (None: a fresh one, recorded in ``voices.describe()``); ``threshold``: which voices count as new
    ("unseen" by default, "unseen:Q", "same-speaker" or a cosine: see toucan_speakemb/voices/novelty.py);
    ``bank``: a VoiceBank whose voices the new ones must also differ from; ``checkpoint``: the Toucan
    checkpoint (path or dict) if the interface's embedding was changed;
    ``conditions`` (e.g. ``{"gender": "f"}``) and ``guidance``: voices of a chosen attribute from a conditional
    generator (classifier-free guidance, see ``Generator.sample``); ``sliders`` (e.g. ``{"pc1": -1.5}``) with
    ``slider_method`` / ``slider_strength``: every voice edited so (see ``toucan_speakemb/generate/sliders.py``);
    ``device``: where the generator samples (auto, cpu, cuda, cuda:<i>; auto: the GPU of this process's
    LOCAL_RANK when CUDA is there, else cpu). None: a generator given by path is loaded on auto, a loaded
    Generator stays where it is. The interface stays on its own device; a seed gives the same voice on every
    device up to float rounding.
    """
    adapter = interface if isinstance(interface, ToucanAdapter) else ToucanAdapter(interface, checkpoint)
    if getattr(adapter.interface, "noise_reduce", False):
        raise SpeakEmbError(NOISE_REDUCE_REFUSED)
    if isinstance(generator, Generator):
        gen = generator if device is None else generator.to(device)
    else:
        gen = Generator.load(generator, "auto" if device is None else device)
    adapter.check_generator(gen)
    request = SamplingRequest.of(conditions=conditions, guidance=guidance, sliders=sliders,
                                 slider_method=slider_method, slider_strength=slider_strength)
    sampler = VoiceSampler(gen, seed, threshold, bank, distinct, max_draws=max_draws, request=request)
    against = "the voices of this block" + (" and the bank" if bank is not None else "") if distinct else "nothing"
    session = VoiceSession(Synthesis(adapter, gen, sampler.seed, sampler.settings, against), sampler)
    target = adapter.interface
    saved = {name: target.__dict__[name] for name in HOOKED if name in target.__dict__}

    def hooked(name):
        original = getattr(target, name)

        def call(*args, **kwargs):
            if session._depth:  # inside a conditioned call: keep its voice
                return original(*args, **kwargs)
            voice = session.sampler.next()
            fields = session.call_fields(name, args, kwargs)
            text = "\n".join(fields["texts"]) if "texts" in fields else str(fields["text"])
            session._depth += 1
            try:
                with session.synthesis.conditioned(voice, text) as synthesis_seed:
                    session.records.append(session.synthesis.record(voice, synthesis_seed, **fields))
                    session.voices.append(voice)
                    return original(*args, **kwargs)
            finally:
                session._depth -= 1

        call.__wrapped__ = original
        return call

    for name in HOOKED:
        # an instance attribute wins over the class method, for direct calls and for Module.__call__ alike
        object.__setattr__(target, name, hooked(name))
    try:
        yield session
    finally:
        for name in HOOKED:
            if name in saved:
                object.__setattr__(target, name, saved[name])
            else:
                target.__dict__.pop(name, None)
