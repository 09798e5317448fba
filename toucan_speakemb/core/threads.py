"""How many CPU threads a job computes with: torch's and those of the BLAS and OpenMP pools under numpy, scipy
and scikit-learn, which torch.set_num_threads does not reach."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional


@contextmanager
def blas_threads(n: Optional[int]) -> Iterator[None]:
    """Limit the BLAS / OpenMP thread pools of numpy, scipy and scikit-learn to ``n`` threads for the block
    (``None`` or 0: leave them as they are). A pool of one thread per core spins against any other job on a
    small machine: the demo's numpy work (nearest-neighbour distances, eigen-decompositions, the report)
    took twice as long beside one other job, for a gain of a few seconds when the machine is idle."""
    if not n:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(int(n)):
        yield
