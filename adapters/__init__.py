"""The Toucan side of toucan-speakemb.

Where it lives: this folder sits at the top of the repository (``adapters/``, beside the package, as the
design card draws it) but is installed as ``toucan_speakemb.adapters``: setup.cfg maps it with
``package_dir = toucan_speakemb.adapters = adapters`` and lists ``toucan_speakemb.adapters`` under
``packages``, so ``pip install .`` (and ``pip install -e .``) put these modules there. It is never installed
as a top-level ``adapters`` package: that name belongs to another PyPI project.

- :mod:`.releases`: the registry of supported Toucan releases and how one is recognised from its source;
  one module per family registers its releases (:mod:`.toucan_v2`: v2.0–v2.2 ``InferenceFastSpeech2``,
  704 = ECAPA ⊕ x-vector; :mod:`.toucan_v3`: v3.0–v3.1.2 ``ToucanTTSInterface``, 192 = ECAPA). A new release
  is one new ``toucan_v*.py`` module (or one more entry in its family's module) plus its tests.
- :class:`ToucanAdapter` wraps an interface of any supported release and conditions utterances on a given
  embedding (``with adapter.voice(embedding): ...``); :class:`ToucanModels` / :func:`load_interface` build a
  checkout's interface from model files (by default where the release's own downloader puts them).
- :mod:`.synthesis`: the one synthesis path, voice → Toucan → wav + sidecar JSON, with Toucan's randomness
  seeded per utterance from the voice and the text; used by `synth`, the batch recipe and the hook.
- :func:`random_voices` (:mod:`.hook`): the hook for your own inference script: every call gets a fresh voice.
- :mod:`.batch_voices`: the batch recipe's engine (N voices x a few sentences as a corpus folder).
- :mod:`.random_toucan`: Toucan's own architectures with random weights (tests, benchmarks).
"""

from toucan_speakemb.adapters.hook import VoiceSession, random_voices
from toucan_speakemb.adapters.toucan import ToucanAdapter, ToucanModels, load_interface, write_wav
from toucan_speakemb.adapters import synthesis

__all__ = ["ToucanAdapter", "ToucanModels", "load_interface", "random_voices", "VoiceSession", "write_wav",
           "synthesis"]
