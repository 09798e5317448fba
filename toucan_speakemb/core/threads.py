"""How many CPU threads a job computes with: torch's own, and every BLAS / OpenMP pool loaded in the process
(numpy's OpenBLAS, torch's and scikit-learn's OpenMP), which torch.set_num_threads alone leaves at a thread
per core."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional


@contextmanager
def cpu_threads(n: Optional[int]) -> Iterator[None]:
    """Compute on ``n`` CPU threads for the block, torch and the pools alike, and put both back as they were
    after (``None`` or 0: leave them as they are). A thread per core spins against any other job on a small
    machine: beside one other job the demo's numpy work (nearest-neighbour distances, eigen-decompositions, the
    report) took twice as long as idle. A library first loaded inside the block is not limited: import it before."""
    if not n:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    with threadpool_limits(int(n)):
        torch.set_num_threads(int(n))
        try:
            yield
        finally:
            torch.set_num_threads(before)
