"""CPU threads: a job's thread setting reaches numpy's BLAS / OpenMP pools, not only torch's."""

import copy

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import toucan_speakemb.training.trainer as trainer
from toucan_speakemb.core.threads import blas_threads
from toucan_speakemb.training.config import TrainConfig

from conftest import TINY, clustered_set


def pool_sizes():
    """The thread count of every BLAS / OpenMP pool loaded in this process."""
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's BLAS is loaded by now in any case
    return sorted(p["num_threads"] for p in threadpool_info())


# every test starts from pools of 3 threads, whatever the machine's cores, so that a limit to 1 shows
WIDE = 3


def test_blas_threads_limits_every_pool_for_the_block_and_restores_them_after():
    with threadpool_limits(WIDE):
        assert pool_sizes() and set(pool_sizes()) == {WIDE}
        with blas_threads(1):
            assert set(pool_sizes()) == {1}
        assert set(pool_sizes()) == {WIDE}


def test_no_thread_setting_leaves_the_pools_as_they_are():
    with threadpool_limits(WIDE):
        for n in (None, 0):
            with blas_threads(n):
                assert set(pool_sizes()) == {WIDE}


def seen_during_training(monkeypatch, tmp_path, threads):
    """The pool sizes inside a tiny training run with ``train.threads`` = ``threads``."""
    seen = []
    real = trainer._train

    def recording(*args, **kwargs):
        seen.append(pool_sizes())
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train", recording)
    cfg = copy.deepcopy(TINY)
    cfg["train"]["threads"] = threads
    trainer.train(clustered_set("toucan-v3", 12, 2), tmp_path / f"run{threads}", TrainConfig.from_dict(cfg),
                  progress=False)
    assert len(seen) == 1
    return seen[0]


def test_training_computes_with_train_threads_in_numpy_too(monkeypatch, tmp_path):
    with threadpool_limits(WIDE):
        assert set(seen_during_training(monkeypatch, tmp_path, 1)) == {1}
        assert set(pool_sizes()) == {WIDE}  # the caller's pools are its own again after the run


def test_training_without_a_thread_setting_leaves_numpys_pools_alone(monkeypatch, tmp_path):
    with threadpool_limits(WIDE):
        assert set(seen_during_training(monkeypatch, tmp_path, None)) == {WIDE}
