"""A generator runs on one torch device, and a seed gives the same voice on every device.

``Generator.load(path, device="auto")`` puts the model on ``cuda:LOCAL_RANK`` when CUDA is there, else on the
CPU. Every noise a voice needs is drawn on the CPU from its own seeds and moved to the device; the voices come
back to the CPU as numpy arrays. So a seed gives the same voice on every device up to the device's float
rounding, and on the CPU bit for bit what it gave before devices existed (on this CPU-only machine ``auto`` is
the CPU: it must give exactly what ``cpu`` gives, on every sampling path).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import load_tensors, save_tensors
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices.bank import VoiceBank
from toucan_speakemb.voices.novelty import VoiceSampler

CUDA = torch.cuda.is_available()

# every sampling path: DDIM, ancestral, stochastic DDIM, a temperature, latent sliders (known x_T and, after
# ancestral sampling, DDIM inversion), renoise sliders
PATHS = [dict(), dict(sampler="ancestral"), dict(eta=0.5), dict(temperature=0.7), dict(sliders={"pc1": 1.5}),
         dict(sampler="ancestral", sliders={"pc1": 0.5}), dict(sliders={"pc2": -1.0}, slider_method="renoise")]


@pytest.fixture(scope="module")
def on_cpu(tiny_generator):
    return Generator.load(tiny_generator.path, "cpu")  # its own copy: the session's generator is never moved


@pytest.fixture(scope="module")
def on_auto(tiny_generator):
    return Generator.load(tiny_generator.path, "auto")


def test_a_generator_loads_on_the_device_asked_for_and_auto_is_the_cpu_without_cuda(on_cpu, on_auto):
    assert on_cpu.device == torch.device("cpu")
    if not CUDA:
        assert on_auto.device == torch.device("cpu")
    assert on_cpu.fingerprint == on_auto.fingerprint  # the file, not the device, names the voices


@pytest.mark.parametrize("settings", PATHS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "ddim")
def test_auto_gives_exactly_what_cpu_gives_on_every_sampling_path(on_cpu, on_auto, settings):
    if CUDA:
        pytest.skip("auto is a GPU here: see the GPU test below")
    a, b = on_cpu.sample(20, seed=4, **settings), on_auto.sample(20, seed=4, **settings)
    assert isinstance(b, np.ndarray) and b.dtype == np.float32
    assert np.array_equal(a, b)


def test_voices_come_back_to_the_cpu_as_numpy_whatever_the_device(on_auto):
    x = on_auto.sample(3, seed=0)
    assert isinstance(x, np.ndarray) and x.shape == (3, on_auto.dim)
    assert on_auto.initial_noise([1, 2]).device == torch.device("cpu")  # x_T: drawn on the CPU
    assert on_auto.invert(on_auto.standardizer.forward(x)).device == torch.device("cpu")


def test_banks_and_samplers_record_the_device_their_voices_were_sampled_on(on_cpu):
    assert VoiceBank.from_generator(on_cpu, 2, seed=0).provenance["device"] == "cpu"
    s = VoiceSampler(on_cpu, seed=0, threshold=1.0)
    s.take(1)
    assert s.provenance()["device"] == "cpu"


@pytest.mark.skipif(CUDA, reason="torch sees a CUDA device")
def test_cuda_without_cuda_is_refused_in_one_line_before_the_file_is_read(tmp_path):
    with pytest.raises(SpeakEmbError) as e:
        Generator.load(tmp_path / "no such run", "cuda")  # the device is refused first, not the missing file
    assert "\n" not in str(e.value) and "no CUDA device" in str(e.value)


def test_a_bad_device_name_is_refused_in_one_line(tiny_generator):
    with pytest.raises(SpeakEmbError) as e:
        Generator.load(tiny_generator.path, "gpu")
    assert str(e.value) == "device must be auto, cpu, cuda or cuda:<i>; got 'gpu'"


def test_a_generator_trained_on_a_gpu_loads_and_samples_on_a_cpu_machine(tiny_generator, on_cpu, tmp_path):
    # its file holds CPU tensors only; the device it was trained on is a config entry, not a requirement
    arrays, meta = load_tensors(tiny_generator.path, "generator")
    meta["config"]["train"]["device"] = "cuda:1"
    path = save_tensors(tmp_path / "generator.safetensors", arrays, meta)
    g = Generator.load(path, "cpu")
    assert g.cfg.train.device == "cuda:1" and g.device == torch.device("cpu")
    assert np.array_equal(g.sample(5, seed=2), on_cpu.sample(5, seed=2))


def test_to_moves_a_loaded_generator_and_keeps_its_voices(tiny_generator, on_cpu):
    g = Generator.load(tiny_generator.path, "cpu")
    assert g.to("auto") is g
    if not CUDA:
        assert np.array_equal(g.sample(5, seed=1), on_cpu.sample(5, seed=1))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("settings", PATHS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "ddim")
def test_on_a_gpu_a_seed_gives_the_cpus_voice_up_to_float_rounding(on_cpu, tiny_generator, settings):
    gpu = Generator.load(tiny_generator.path, "cuda")
    a, b = on_cpu.sample(20, seed=4, **settings), gpu.sample(20, seed=4, **settings)
    assert gpu.device.type == "cuda" and isinstance(b, np.ndarray)
    spread = float(np.std(a))
    np.testing.assert_allclose(b, a, atol=1e-3 * spread, rtol=0)
