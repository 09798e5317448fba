"""CPU threads: a job's thread setting reaches numpy's BLAS / OpenMP pools as well as torch, and both are put
back after it."""

import copy

import numpy as np
import torch
from threadpoolctl import threadpool_info

import toucan_speakemb.training.trainer as trainer
from toucan_speakemb.core.threads import cpu_threads
from toucan_speakemb.training.config import TrainConfig

from conftest import TINY, clustered_set

# every test starts from 3 threads, whatever the machine's cores, so that a limit to 1 shows and a restore too
WIDE = 3


def pool_sizes():
    """The thread count of every BLAS / OpenMP pool loaded in this process."""
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's BLAS is loaded by now in any case
    return sorted(p["num_threads"] for p in threadpool_info())


def wide():
    """Torch and every pool at WIDE threads for the block (each test checks that they are)."""
    return cpu_threads(WIDE)


def test_cpu_threads_limits_torch_and_every_pool_for_the_block_and_restores_them_after():
    with wide():
        assert pool_sizes() and set(pool_sizes()) == {WIDE}
        with cpu_threads(1):
            assert set(pool_sizes()) == {1} and torch.get_num_threads() == 1
        assert set(pool_sizes()) == {WIDE} and torch.get_num_threads() == WIDE


def test_the_threads_are_restored_when_the_block_raises():
    with wide():
        try:
            with cpu_threads(1):
                raise RuntimeError("inside")
        except RuntimeError:
            pass
        assert set(pool_sizes()) == {WIDE} and torch.get_num_threads() == WIDE


def test_no_thread_setting_leaves_torch_and_the_pools_as_they_are():
    with wide():
        for n in (None, 0):
            with cpu_threads(n):
                assert set(pool_sizes()) == {WIDE} and torch.get_num_threads() == WIDE


def seen_during_training(monkeypatch, tmp_path, threads):
    """(pool sizes, torch threads) inside a tiny training run with ``train.threads`` = ``threads``."""
    seen = []
    real = trainer._train

    def recording(*args, **kwargs):
        seen.append((pool_sizes(), torch.get_num_threads()))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train", recording)
    cfg = copy.deepcopy(TINY)
    cfg["train"]["threads"] = threads
    trainer.train(clustered_set("toucan-v3", 12, 2), tmp_path / f"run{threads}", TrainConfig.from_dict(cfg),
                  progress=False)
    assert len(seen) == 1
    return seen[0]


def test_training_computes_with_train_threads_in_torch_and_numpy_and_gives_the_caller_its_own_back(
        monkeypatch, tmp_path):
    with wide():
        pools, torch_threads = seen_during_training(monkeypatch, tmp_path, 1)
        assert set(pools) == {1} and torch_threads == 1
        assert set(pool_sizes()) == {WIDE} and torch.get_num_threads() == WIDE


def test_training_without_a_thread_setting_leaves_torch_and_numpy_alone(monkeypatch, tmp_path):
    with wide():
        pools, torch_threads = seen_during_training(monkeypatch, tmp_path, None)
        assert set(pools) == {WIDE} and torch_threads == WIDE
