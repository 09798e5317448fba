"""The public Python API: the names the README and the examples import from ``toucan_speakemb`` are the
functions and classes they say, also after every stage folder has been imported (a subpackage of the same name
would shadow a lazily imported function)."""

import importlib
import inspect
import pkgutil

import toucan_speakemb


def test_public_names_are_the_api_after_every_module_is_imported():
    for info in pkgutil.walk_packages(toucan_speakemb.__path__, "toucan_speakemb."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    from toucan_speakemb import EmbeddingSet, Generator, TrainConfig, VoiceBank, get_profile, train

    assert inspect.isfunction(train) and train.__module__ == "toucan_speakemb.training.trainer"
    assert inspect.isfunction(get_profile)
    for cls in (EmbeddingSet, Generator, TrainConfig, VoiceBank):
        assert inspect.isclass(cls), cls
    assert sorted(toucan_speakemb.__all__) == sorted(
        ["EmbeddingSet", "Profile", "get_profile", "SpeakEmbError", "train", "TrainConfig", "Generator", "VoiceBank"])
