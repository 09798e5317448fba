"""Which torch device a process uses: one rule (core/distributed.py) for every command and the batch recipe.

``auto`` is ``cuda:LOCAL_RANK`` when this torch sees CUDA (one GPU per torchrun rank), else ``cpu``; ``cpu``,
``cuda`` and ``cuda:<i>`` are taken as given when this torch can use them; anything else, and a CUDA device
this torch cannot see, is one error line naming the option. This machine has no GPU: the CUDA side is
specified with torch.cuda's answers replaced.
"""

from __future__ import annotations

import pytest
import torch

from toucan_speakemb.core.distributed import DEVICE_HELP, DEVICES, check_device_name, resolve_device
from toucan_speakemb.core.errors import SpeakEmbError


def one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n)``: torch sees n CUDA devices (0: none), whatever the host has."""

    def see(n: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return see


def test_auto_is_the_cpu_when_torch_sees_no_cuda(gpus, monkeypatch):
    gpus(0)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == resolve_device("") == "cpu"


def test_auto_is_the_gpu_of_the_local_rank_when_torch_sees_cuda(gpus, monkeypatch):
    gpus(4)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == "cuda:0"  # a single process: the first GPU
    for rank in ("0", "1", "3"):  # torchrun: one device per rank
        monkeypatch.setenv("LOCAL_RANK", rank)
        assert resolve_device("auto") == f"cuda:{rank}"


def test_auto_refuses_a_local_rank_beyond_the_gpus_in_one_line(gpus, monkeypatch):
    gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "2")  # torchrun --nproc_per_node 3 on a node with 2 GPUs
    with pytest.raises(SpeakEmbError) as e:
        resolve_device("auto", "--device")
    line = one_line(e)
    assert line.startswith("--device auto") and "local rank 2" in line and "2 CUDA device(s)" in line


def test_a_named_device_is_taken_as_given_when_torch_can_use_it(gpus):
    gpus(2)
    assert [resolve_device(d) for d in ("cpu", "cuda", "cuda:0", "cuda:1")] == ["cpu", "cuda", "cuda:0", "cuda:1"]
    gpus(0)
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("asked", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_refused_in_one_line_naming_the_option(gpus, asked):
    gpus(0)
    with pytest.raises(SpeakEmbError) as e:
        resolve_device(asked, "--device")
    line = one_line(e)
    assert line.startswith(f"--device '{asked}'") and "no CUDA device" in line and "auto or cpu" in line


def test_a_gpu_index_this_torch_does_not_have_is_refused_in_one_line(gpus):
    gpus(2)
    with pytest.raises(SpeakEmbError) as e:
        resolve_device("cuda:2", "train.device")
    line = one_line(e)
    assert "train.device 'cuda:2'" in line and "2 CUDA device(s)" in line and "cuda:0 to cuda:1" in line


@pytest.mark.parametrize("bad", ["gpu", "GPU", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "mps", " cpu", "1", ""])
def test_names_other_than_auto_cpu_cuda_and_cuda_i_are_refused_without_torch(bad):
    with pytest.raises(SpeakEmbError) as e:
        check_device_name(bad, "--device")
    assert one_line(e) == f"--device must be {DEVICES}; got {bad!r}"


def test_the_accepted_names_pass_the_check_unchanged():
    for good in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert check_device_name(good) == good


def test_every_device_option_shares_one_help_text_that_says_what_auto_does():
    assert "auto (cuda:LOCAL_RANK when this torch sees CUDA" in DEVICE_HELP and "else cpu" in DEVICE_HELP
    assert "one GPU per torchrun rank" in DEVICE_HELP
    assert all(name in DEVICE_HELP for name in ("cpu", "cuda", "cuda:<i>"))
