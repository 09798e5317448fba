"""Running one job as several processes: ``torchrun`` ranks, ``--shard K/N`` job-array slices, and the device
each process uses. Shared by extraction and the batch voice recipe."""

from __future__ import annotations

import datetime
import os
import re
from typing import Optional, Tuple

from toucan_speakemb.core.errors import SpeakEmbError

DEVICES = "auto, cpu, cuda or cuda:<i>"
# The help of every device option (extract, train's train.device, sample, voices add, synth, the batch recipe,
# the benchmarks): one text, one set of accepted values.
DEVICE_HELP = ("Where torch runs: auto (cuda:LOCAL_RANK when this torch sees CUDA, i.e. one GPU per torchrun "
               "rank; else cpu), cpu, cuda or cuda:<i>.")


def check_device_name(device, what: str = "device") -> str:
    """``device`` is one of auto, cpu, cuda, cuda:<i> (checked without torch, before any work)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device)):
        raise SpeakEmbError(f"{what} must be {DEVICES}; got {device!r}")
    return device


def resolve_device(device: Optional[str] = "auto", what: str = "device") -> str:
    """The torch device to use: ``auto`` is ``cuda:LOCAL_RANK`` when CUDA is there (one device per torchrun
    rank), else ``cpu``; a CUDA device this torch cannot see is refused in one line naming ``what``."""
    import torch

    if device in (None, "", "auto"):
        if not torch.cuda.is_available():
            return "cpu"
        rank, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if rank >= count:  # more ranks on this node than GPUs: say so before any work, not in a CUDA error later
            raise SpeakEmbError(f"{what} auto: this is local rank {rank}, but this torch sees {count} CUDA "
                                f"device(s); start at most {count} processes per node, or give cpu")
        return f"cuda:{rank}"
    check_device_name(device, what)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpeakEmbError(f"{what} '{device}' asked for, but this torch sees no CUDA device (use auto or cpu)")
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise SpeakEmbError(f"{what} '{device}' asked for, but this torch sees {count} CUDA device(s) "
                                f"(cuda:0 to cuda:{count - 1})")
    return device


def parse_shard(text: str, what: str = "--shard") -> Tuple[int, int]:
    """``"K/N"`` -> (K, N), shards numbered from 1 (a job array's task id)."""
    try:
        k_s, n_s = str(text).split("/")
        k, n = int(k_s), int(n_s)
    except ValueError:
        raise SpeakEmbError(f"{what} must look like K/N (e.g. 3/8), got {text!r}") from None
    if n < 1 or not 1 <= k <= n:
        raise SpeakEmbError(f"{what} {text}: need 1 <= K <= N (shards are numbered from 1)")
    return k, n


def share(items, k: int, n: int):
    """The items of share ``k`` of ``n`` (0-based ``k``): every n-th, from the k-th."""
    return [x for pos, x in enumerate(items) if pos % n == k]


class Dist:
    """torchrun's environment: rank, world size, and collective helpers that are no-ops alone."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.created = False
        self.device = "cpu"
        if self.world > 1:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():
                backend = "nccl" if torch.cuda.is_available() else "gloo"
                if backend == "nccl":
                    torch.cuda.set_device(self.local_rank)
                # Long timeout: ranks wait at the final barrier for the slowest one, and for rank 0's merge.
                dist.init_process_group(backend, timeout=datetime.timedelta(hours=48))
                self.created = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if dist.get_backend() == "nccl":
                self.device = f"cuda:{torch.cuda.current_device()}"

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def any_failed(self, failed: bool) -> bool:
        """True on every rank when any rank failed (an all-reduce, so no rank is left waiting)."""
        if self.world == 1:
            return failed
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if failed else 0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def close(self):
        if self.created:
            import torch.distributed as dist

            dist.destroy_process_group()


def collective(dist: Dist, fn, *args, **kwargs):
    """Run ``fn`` on every rank; if it fails anywhere, every rank raises (the failing one its own error)."""
    err: Optional[BaseException] = None
    out = None
    try:
        out = fn(*args, **kwargs)
    except (SpeakEmbError, OSError) as e:
        err = e
    if dist.any_failed(err is not None):
        if err is not None:
            raise err
        raise SpeakEmbError("another process of this torchrun job failed; see its message")
    return out
