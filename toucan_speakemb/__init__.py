"""toucan-speakemb: new voices for IMS Toucan from a diffusion model of speaker embeddings.

The public Python API, in the order data flows through it::

    from toucan_speakemb import EmbeddingSet, train, Generator
    run = train("my_set.safetensors", "runs/default")        # or the CLI: toucan-speakemb train
    voices = Generator.load("runs/default").sample(10, seed=0)  # (10, d) numpy array
"""

from toucan_speakemb.core.version import __version__  # noqa: E402

from toucan_speakemb.core.errors import SpeakEmbError  # noqa: E402
from toucan_speakemb.core.profiles import Profile, get_profile  # noqa: E402
from toucan_speakemb.core.embedding_set import EmbeddingSet  # noqa: E402


def __getattr__(name):
    # torch-heavy parts are imported on first use so that `import toucan_speakemb` stays light.
    if name in ("train", "TrainConfig"):
        from toucan_speakemb.training import trainer as training

        return getattr(training, name if name == "train" else "TrainConfig")
    if name == "Generator":
        from toucan_speakemb.generate.generator import Generator

        return Generator
    if name == "VoiceBank":
        from toucan_speakemb.voices.bank import VoiceBank

        return VoiceBank
    raise AttributeError(name)


__all__ = ["EmbeddingSet", "Profile", "get_profile", "SpeakEmbError", "train", "TrainConfig", "Generator", "VoiceBank"]
