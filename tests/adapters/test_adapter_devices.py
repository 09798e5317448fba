"""The Toucan side on a device: `synth`'s synthesis path, the hook and the batch recipe take a device (auto,
cpu, cuda, cuda:<i>; auto: ``cuda:LOCAL_RANK`` when CUDA is there, else cpu) for Toucan and the generator; CUDA
asked for where this torch sees none is one error line before Toucan is built or anything is written. Run
with the stand-in interface (tests/toucan_standin.py) built directly, so no checkout is imported here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import toucan_standin as standin
from test_batch_voices import config
from toucan_speakemb import SpeakEmbError
from toucan_speakemb.adapters import ToucanAdapter, random_voices, synthesis
from toucan_speakemb.adapters.batch_voices import BatchConfig, run_batch
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices.bank import VoiceBank

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def v3(tmp_path):
    tts = standin.make_checkpoint(tmp_path / "m" / "ToucanTTS.pt", 192, config=True)
    voc = standin.make_vocoder(tmp_path / "m" / "Vocoder.pt", v22=False)
    return standin.ToucanTTSInterface(tts_model_path=str(tts), vocoder_model_path=str(voc))


class Models:
    """ToucanModels' part synthesis uses: it builds the stand-in interface and records the device asked for."""

    def __init__(self, interface):
        self.interface, self.devices = interface, []

    def check_generator(self, generator):
        pass

    def load(self, device="auto", language=None):
        self.devices.append(device)
        self.interface.device = device
        return ToucanAdapter(self.interface)


def test_synthesis_builds_toucan_on_the_resolved_device(tiny_generator, v3, tmp_path):
    models = Models(v3)
    cars, _ = synthesis.synth(["Hello."], [tmp_path / "a.wav"], tiny_generator, models, seed=1, progress=False)
    assert models.devices == (["cuda:0"] if CUDA else ["cpu"])  # the default is auto, resolved before Toucan
    assert (tmp_path / "a.wav").exists() and cars[0]["draw_seed"] == 1


@pytest.mark.skipif(CUDA, reason="torch sees a CUDA device")
def test_synthesis_refuses_cuda_without_cuda_before_toucan_is_built_or_anything_written(tiny_generator, v3,
                                                                                       tmp_path):
    models = Models(v3)
    with pytest.raises(SpeakEmbError) as e:
        synthesis.synth(["Hello."], [tmp_path / "a.wav"], tiny_generator, models, seed=1, device="cuda",
                        progress=False)
    assert "\n" not in str(e.value) and "no CUDA device" in str(e.value)
    assert models.devices == [] and list(tmp_path.glob("*.wav")) == []


def test_the_hook_loads_a_generator_by_path_on_the_device_given(tiny_generator, v3):
    with random_voices(v3, tiny_generator.path, seed=2, device="cpu") as voices:
        v3.forward("Hello.")
    assert voices.sampler.generator.device == torch.device("cpu")
    assert voices.describe()["sampling"]["device"] == "cpu"


def test_the_hook_leaves_a_loaded_generator_where_it_is_unless_told(tiny_generator, v3):
    gen = Generator.load(tiny_generator.path, "cpu")
    with random_voices(v3, gen, seed=2) as voices:
        v3.forward("Hello.")
    assert voices.sampler.generator is gen and gen.device == torch.device("cpu")


def test_the_hook_gives_the_same_voices_on_auto_and_on_cpu_here(tiny_generator, v3):
    if CUDA:
        pytest.skip("auto is a GPU here")
    ids = []
    for device in ("cpu", "auto"):
        with random_voices(v3, tiny_generator.path, seed=5, device=device) as voices:
            v3.forward("One.")
            v3.forward("Two.")
        ids.append([v.id for v in voices.voices])
        embeddings = [v.embedding for v in voices.voices]
    assert ids[0] == ids[1]
    assert all(isinstance(e, np.ndarray) for e in embeddings)


@pytest.mark.skipif(CUDA, reason="torch sees a CUDA device")
def test_the_hook_refuses_cuda_without_cuda_and_leaves_the_interface_as_it_was(tiny_generator, v3):
    with pytest.raises(SpeakEmbError) as e:
        with random_voices(v3, tiny_generator.path, device="cuda"):
            pass
    assert "no CUDA device" in str(e.value)
    assert "forward" not in v3.__dict__ and "read_to_file" not in v3.__dict__


@pytest.mark.skipif(CUDA, reason="torch sees a CUDA device")
def test_the_batch_recipe_refuses_cuda_without_cuda_before_writing_anything(tiny_generator, v3, tmp_path):
    with pytest.raises(SpeakEmbError) as e:
        run_batch(config(tiny_generator, tmp_path / "batch", device="cuda"), ToucanAdapter(v3), progress=False)
    assert "no CUDA device" in str(e.value) and not (tmp_path / "batch").exists()


def test_the_batch_recipe_samples_its_voices_on_its_device_and_records_it(tiny_generator, v3, tmp_path):
    out = tmp_path / "batch"
    run_batch(config(tiny_generator, out, voices=2, utterances_per_voice=1, device="auto"), ToucanAdapter(v3),
              progress=False)
    device = "cuda:0" if CUDA else "cpu"
    assert VoiceBank.load(out / "voices.safetensors").provenance["additions"][0]["device"] == device
    shares = [json.loads(p.read_text()) for p in (out / "shares").glob("*.json")]
    assert [s["device"] for s in shares] == ["cpu"]  # the stand-in interface stays where the test built it


def test_the_batch_recipe_takes_the_same_device_values():
    for good in ("auto", "cpu", "cuda", "cuda:3"):
        assert BatchConfig.from_dict({"generator": "g", "sentences": "s", "device": good}).device == good
    with pytest.raises(SpeakEmbError, match=r"device must be auto, cpu, cuda or cuda:<i>; got 'gpu'"):
        BatchConfig.from_dict({"generator": "g", "sentences": "s", "device": "gpu"})
