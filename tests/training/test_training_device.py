"""Training on a device: ``train.device`` (default auto: ``cuda:LOCAL_RANK`` when CUDA is there, else cpu).

The model, the EMA, the batches and the noise live on that device; the batch indices and the noise are drawn
on the CPU from the checkpointed generator and the Gaussian fit is computed on the CPU, so a device changes
float rounding only (on the CPU: nothing at all). A bad name, or CUDA asked for where this torch sees none, is
one error line before anything is written. Checkpoints and the generator hold CPU tensors and load on any
machine; the run's log and summary.json say which device was used, and a run may be resumed on another.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import one_line
from test_training import assert_bitwise_equal, make_data, tensors, tiny
from toucan_speakemb import SpeakEmbError
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.training.trainer import train

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """The TINY config of test_training on its data, with train.device=cpu."""
    out = tmp_path_factory.mktemp("device_cpu") / "run"
    train(make_data(), out, tiny(train={"device": "cpu"}), progress=False)
    return out


def test_the_device_is_a_config_key_that_defaults_to_auto():
    assert TrainConfig().train.device == "auto"
    for name in ("cpu", "cuda", "cuda:1", "auto"):
        assert tiny(train={"device": name}).train.device == name


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CPU", 0])
def test_a_bad_device_name_is_one_error_line_naming_the_key(bad):
    with pytest.raises(SpeakEmbError) as e:
        tiny(train={"device": bad})
    assert "train.device" in one_line(e)


@pytest.mark.skipif(CUDA, reason="torch sees a CUDA device")
@pytest.mark.parametrize("asked", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_refused_in_one_line_before_anything_is_written(tmp_path, asked):
    with pytest.raises(SpeakEmbError) as e:
        train(make_data(), tmp_path / "run", tiny(train={"device": asked}), progress=False)
    line = one_line(e)
    assert f"train.device '{asked}'" in line and "no CUDA device" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(CUDA, reason="auto is a GPU here")
def test_auto_trains_exactly_the_generator_cpu_trains_here(cpu_run, tmp_path):
    train(make_data(), tmp_path / "run", tiny(train={"device": "auto"}), progress=False)
    assert_bitwise_equal(tensors(tmp_path / "run" / "generator.safetensors"),
                         tensors(cpu_run / "generator.safetensors"))


def test_the_log_and_the_summary_say_which_device_was_used(cpu_run):
    assert json.loads((cpu_run / "summary.json").read_text())["device"] == "cpu"
    log = (cpu_run / "train.log").read_text()
    assert "device: cpu (train.device cpu)" in log and "s on cpu; generator:" in log


@pytest.mark.skipif(CUDA, reason="auto is a GPU here")
def test_a_run_stopped_on_one_device_setting_resumes_on_another_to_the_same_generator(cpu_run, tmp_path):
    out = tmp_path / "run"
    train(make_data(), out, tiny(train={"device": "cpu"}), progress=False, max_steps=10)
    train(make_data(), out, tiny(train={"device": "auto"}), progress=False)  # the device is not the run's identity
    assert_bitwise_equal(tensors(out / "generator.safetensors"), tensors(cpu_run / "generator.safetensors"))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_a_generator_trained_on_a_gpu_loads_and_samples_on_the_cpu(tmp_path):
    out = tmp_path / "run"
    train(make_data(), out, tiny(train={"device": "cuda"}), progress=False, max_steps=10)
    assert all(isinstance(v, np.ndarray) for v in tensors(next((out / "checkpoints").iterdir())).values())
    train(make_data(), out, tiny(train={"device": "cuda"}), progress=False)  # resumes on the GPU
    assert json.loads((out / "summary.json").read_text())["device"].startswith("cuda")
    on_cpu, on_gpu = Generator.load(out, "cpu"), Generator.load(out, "cuda")
    assert on_cpu.device == torch.device("cpu")
    a, b = on_cpu.sample(50, seed=1), on_gpu.sample(50, seed=1)
    np.testing.assert_allclose(b, a, atol=1e-3 * float(np.std(a)), rtol=0)
