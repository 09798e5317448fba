"""Host-toolkit integration, installed as ``toucan_speakemb.adapters`` (never as a top-level ``adapters``
package: that name belongs to another PyPI project).

- :class:`ToucanAdapter` wraps a Toucan inference interface (v2.2 ``InferenceFastSpeech2``, 704; v3.x
  ``ToucanTTSInterface``, 192), detected from the interface and its checkpoint's ``default_emb``, and
  conditions utterances on a given embedding (``with adapter.voice(embedding): ...``).
- :func:`random_voices` is the hook for your own inference script: every call gets a fresh voice.
- :class:`ToucanModels` / :func:`load_interface` build a checkout's interface from model files.
- :mod:`.random_toucan` builds Toucan's own architectures with random weights (tests, benchmarks).
"""

from toucan_speakemb.adapters.hook import VoiceSession, random_voices
from toucan_speakemb.adapters.toucan import ToucanAdapter, ToucanModels, load_interface, write_wav

__all__ = ["ToucanAdapter", "ToucanModels", "load_interface", "random_voices", "VoiceSession", "write_wav"]
