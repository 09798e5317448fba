"""SamplingRequest: how voices are to be sampled, one object from every front end to the generator.

``sample``, ``synth``, ``voices add``, the batch recipe, the Toucan hook and the Python API each build one
request (sampler, steps, conditions and guidance, sliders, temperature) and pass it on; the generator samples
by it (:meth:`toucan_speakemb.generate.generator.Generator.sample_seeds`), and voice banks and samplers record
what it asked for (:meth:`SamplingRequest.settings`) in voice ids and provenance. It is checked once, against
the generator, before any sampling (:meth:`SamplingRequest.check`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional


@dataclass(frozen=True)
class SamplingRequest:
    sampler: Optional[str] = None            # a name of diffusion.samplers.SAMPLERS; None: the generator's
    steps: Optional[int] = None              # DDIM steps; None: the generator's
    eta: Optional[float] = None              # DDIM's stochasticity (0: deterministic); None: the generator's
    conditions: Mapping[str, Any] = field(default_factory=dict)   # e.g. {"gender": "f"} (conditional models)
    guidance: Optional[float] = None         # classifier-free guidance w; None: the generator's
    sliders: Mapping[str, float] = field(default_factory=dict)    # e.g. {"pc1": 1.5}
    slider_method: Optional[str] = None      # latent | renoise; None: the generator's
    slider_strength: Optional[float] = None  # renoise only
    temperature: Optional[float] = None      # scale of x_T (outside the network's subspace x the generator's
    #                                          rest ratio); None: the one stored with the generator

    @classmethod
    def of(cls, conditions: Optional[Mapping[str, Any]] = None, sliders: Optional[Mapping[str, float]] = None,
           **kwargs) -> "SamplingRequest":
        """A request from keyword arguments; None conditions or sliders mean none."""
        return cls(conditions=dict(conditions or {}), sliders=dict(sliders or {}), **kwargs)

    @property
    def conditional(self) -> bool:
        return any(v is not None for v in self.conditions.values())

    def check(self, generator) -> Dict[str, Any]:
        """Refuse, in one line each, what this generator cannot do (unknown sampler, steps out of range, an
        attribute it was not trained on, an unknown slider, a bad temperature), before any sampling; returns
        :meth:`settings`."""
        generator.sample_seeds([], replace(self, sliders={}))  # sampler, steps, conditions, temperature
        return self.settings(generator)                        # the sliders and their settings

    def settings(self, generator) -> Dict[str, Any]:
        """What a voice's id and provenance record of this request ({} for plain sampling): the conditions
        with their guidance, the sliders with their method (and strength), a temperature other than the
        generator's default."""
        out: Dict[str, Any] = {}
        if self.conditional:
            spec = generator.conditions
            out["conditions"] = spec.describe(spec.encode_request(self.conditions))
            out["guidance"] = generator.cfg.sample.guidance if self.guidance is None else float(self.guidance)
        if self.sliders:
            from toucan_speakemb.generate.sliders import check_sliders  # here: reading a request loads no torch

            method = check_sliders(generator, self.sliders, self.slider_method, self.slider_strength)
            out["sliders"] = {k: float(v) for k, v in self.sliders.items()}
            out["slider_method"] = method
            if method == "renoise":
                out["slider_strength"] = (generator.cfg.sample.slider_strength if self.slider_strength is None
                                          else float(self.slider_strength))
        t = generator.check_temperature(self.temperature)
        if t != generator.temperature:
            out["temperature"] = t
        return out


def variant_tag(settings: Dict[str, Any]) -> str:
    """A short stable hash of recorded sampling settings ("" when there are none): a voice id's third part, so
    that an id never names two different vectors."""
    if not settings:
        return ""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:6]
