"""The diffusion core: schedules, the Gaussian forward process and its samplers, and denoisers.

Everything mathematical lives in :mod:`.schedules` and :mod:`.gaussian`, as functions of the variance
schedule; :mod:`.denoisers` holds the networks. Nothing here knows about files or speakers.
"""

from toucan_speakemb.diffusion.gaussian import GaussianDiffusion
from toucan_speakemb.diffusion.schedules import SCHEDULES, make_betas

__all__ = ["GaussianDiffusion", "SCHEDULES", "make_betas"]
