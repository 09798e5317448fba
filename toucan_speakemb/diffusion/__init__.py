"""The diffusion core, all of its math in one place, as functions of the variance schedule:

- :mod:`.schedules`: the variance schedules (linear, quadratic, sigmoid, cosine);
- :mod:`.gaussian`: the Gaussian forward process, training targets and losses, the conversions between
  predictions and x_0 / ε, the sampling and inversion loops, and the exact Gaussian quantities;
- :mod:`.samplers`: the samplers by name (a registry) and each voice's noise from its own seed;
- :mod:`.denoisers`: the networks, and the Gaussian-residual wrapper (:func:`.denoisers.gaussian_part`);
- :mod:`.standardize`, :mod:`.subspace`: the data transforms the model runs in.

Nothing here knows about files or speakers. The package imports nothing itself, so that reading a name (e.g.
the samplers' for ``--help``) does not load torch.
"""
