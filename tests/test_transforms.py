"""Data transforms stored with the model (quantile-normal, radial) and the Gaussian-residual denoiser."""

import numpy as np
import pytest
import torch

from toucan_speakemb.diffusion.denoisers import GaussianResidual, ResidualMLPDenoiser
from toucan_speakemb.diffusion.gaussian import (GaussianDiffusion, gaussian_flow_step, gaussian_optimal_denoiser,
                                              gaussian_posterior_x0)
from toucan_speakemb.diffusion.schedules import make_betas
from toucan_speakemb.standardize import Standardizer


def nonneg_data(n=300, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(0.2, 1, (n, d)), 0)  # about 40% exact zeros per dimension
    x[:, -1] = 2.5  # a constant dimension
    return x


def test_quantile_transform_round_trips_the_training_data():
    x = nonneg_data()
    st = Standardizer.fit(x, kind="quantile")
    np.testing.assert_allclose(st.inverse(st.forward(x)), x, atol=1e-5)


def test_quantile_transform_outputs_stay_inside_each_dimensions_training_range_whatever_the_input():
    x = nonneg_data()
    st = Standardizer.fit(x, kind="quantile")
    z = np.random.default_rng(1).normal(0, 3, (5000, x.shape[1]))  # far wider than the data
    g = st.inverse(z)
    assert np.all(g >= x.min(0) - 1e-6) and np.all(g <= x.max(0) + 1e-6)
    assert g.min() >= 0


def test_quantile_transform_gives_a_point_mass_back_exactly_under_small_model_errors():
    x = nonneg_data(n=2000)
    st = Standardizer.fit(x, kind="quantile")
    # a model that learned the transformed data up to small errors
    g = st.inverse(st.forward(x) + np.random.default_rng(2).normal(0, 0.05, x.shape))
    for j in range(x.shape[1] - 1):
        assert abs(np.mean(g[:, j] == 0) - np.mean(x[:, j] == 0)) < 0.02


def test_quantile_transform_makes_each_marginal_standard_normal():
    x = np.random.default_rng(3).exponential(1.0, (4000, 3)) ** 2  # very skewed
    z = Standardizer.fit(x, kind="quantile").forward(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    skew = ((z - z.mean(0)) ** 3).mean(0)
    assert np.all(np.abs(skew) < 0.05)


def test_weighted_quantiles_follow_the_weights():
    x = np.concatenate([np.zeros((90, 1)), np.ones((10, 1))])
    w = np.concatenate([np.full(90, 1 / 90), np.full(10, 1 / 10)])  # both values weigh half
    st = Standardizer.fit(x, weights=w, kind="quantile")
    g = st.inverse(np.random.default_rng(4).standard_normal((20000, 1)))
    assert abs(np.mean(g < 0.5) - 0.5) < 0.03


def test_radial_transform_keeps_generated_lengths_inside_the_training_range_and_signs():
    rng = np.random.default_rng(5)
    x = np.abs(rng.normal(size=(200, 8)))
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0.94, 0.97, (200, 1))
    st = Standardizer.fit(x, kind="quantile", radial=True)
    np.testing.assert_allclose(st.inverse(st.forward(x)), x, atol=1e-3)
    g = st.inverse(rng.normal(0, 2, (3000, 8)))
    norms = np.linalg.norm(g, axis=1)
    r = np.linalg.norm(x, axis=1)
    assert norms.min() >= r.min() - 1e-5 and norms.max() <= r.max() + 1e-5
    assert g.min() >= 0


def test_transform_survives_saving_as_arrays():
    x = nonneg_data()
    st = Standardizer.fit(x, kind="quantile", radial=True)
    back = Standardizer.from_arrays({k: v.copy() for k, v in st.to_arrays().items()})
    assert back.same_as(st) and back.kind == "quantile"
    assert not back.same_as(Standardizer.fit(x, kind="standard"))


# ---- the Gaussian-residual denoiser --------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_gaussian_posterior_mean_in_the_eigenbasis_equals_the_direct_formula(prediction):
    rng = np.random.default_rng(6)
    a = rng.normal(size=(4, 4))
    cov = torch.tensor(a @ a.T + 0.1 * np.eye(4))
    mean = torch.tensor(rng.normal(size=4))
    diffusion = GaussianDiffusion(make_betas("cosine", 100), prediction=prediction)
    exact = gaussian_optimal_denoiser(diffusion, mean, cov)
    vals, vecs = torch.linalg.eigh(cov)
    xt = torch.tensor(rng.normal(size=(50, 4)))
    t = torch.randint(100, (50,))
    abar = torch.tensor(diffusion.alphas_cumprod)[t][:, None]
    x0 = gaussian_posterior_x0(xt, abar, mean, vecs, vals)
    x0_exact, _ = diffusion.x0_and_eps(xt, t, exact(xt, t))
    torch.testing.assert_close(x0, x0_exact, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_untrained_gaussian_residual_model_samples_the_gaussian_fit_of_its_data(prediction):
    rng = np.random.default_rng(7)
    a = rng.normal(size=(3, 3))
    data = torch.tensor(rng.normal(size=(4000, 3)) @ a.T + np.array([1.0, -2.0, 0.5]), dtype=torch.float32)
    diffusion = GaussianDiffusion(make_betas("cosine", 200), prediction=prediction)
    model = GaussianResidual(ResidualMLPDenoiser(3, 200, hidden=16, blocks=1), 3, diffusion.alphas_cumprod, prediction)
    model.fit_gaussian(data)
    assert torch.count_nonzero(model.net(data[:5], torch.zeros(5, dtype=torch.long))) == 0  # zero-initialised
    with torch.no_grad():
        x = diffusion.ddim_sample_loop(model, torch.randn(20000, 3, generator=torch.Generator().manual_seed(0)),
                                       steps=200)
    np.testing.assert_allclose(x.mean(0).numpy(), data.mean(0).numpy(), atol=0.08)
    np.testing.assert_allclose(np.cov(x.numpy().T), np.cov(data.numpy().T), atol=0.15 * np.abs(np.cov(data.numpy().T)).max())


def test_gaussian_statistics_are_part_of_the_models_saved_state():
    diffusion = GaussianDiffusion(make_betas("cosine", 10))
    model = GaussianResidual(ResidualMLPDenoiser(2, 10, hidden=8, blocks=1), 2, diffusion.alphas_cumprod, "v")
    model.fit_gaussian(torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 4.0]]))
    keys = set(model.state_dict())
    assert {"mean", "eigvecs", "eigvals", "abar"} <= keys


def test_gaussian_flow_step_keeps_the_marginal_at_every_noise_level():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(3, 3))
    cov = torch.tensor(a @ a.T + 0.05 * np.eye(3))
    mean = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    vals, vecs = torch.linalg.eigh(cov)
    x0 = torch.tensor(rng.multivariate_normal(mean.numpy(), cov.numpy(), 40000))
    abar_t, abar_s = 0.3, 0.8
    xt = abar_t**0.5 * x0 + (1 - abar_t) ** 0.5 * torch.randn(x0.shape, dtype=torch.float64)
    xs = gaussian_flow_step(xt, abar_t, abar_s, mean, vecs, vals)
    want_cov = abar_s * cov + (1 - abar_s) * torch.eye(3, dtype=torch.float64)
    np.testing.assert_allclose(xs.mean(0).numpy(), abar_s**0.5 * mean.numpy(), atol=0.03)
    np.testing.assert_allclose(np.cov(xs.numpy().T), want_cov.numpy(), atol=0.05)


@pytest.mark.parametrize("steps", [2, 5])
def test_ddim_with_the_exact_gaussian_step_is_exact_for_a_gaussian_at_few_steps_where_plain_ddim_shrinks(steps):
    rng = np.random.default_rng(9)
    a = rng.normal(size=(3, 3))
    data = torch.tensor(rng.normal(size=(20000, 3)) @ a.T * 2 + np.array([1.0, -2.0, 0.5]), dtype=torch.float32)
    diffusion = GaussianDiffusion(make_betas("cosine", 1000), prediction="v")
    model = GaussianResidual(ResidualMLPDenoiser(3, 1000, hidden=16, blocks=1), 3, diffusion.alphas_cumprod, "v")
    model.fit_gaussian(data)
    noise = torch.randn(20000, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exact = diffusion.ddim_sample_loop(model, noise, steps=steps, gaussian=model)
        plain = diffusion.ddim_sample_loop(model, noise, steps=steps)
    want = np.cov(data.numpy().T)
    np.testing.assert_allclose(np.cov(exact.numpy().T), want, atol=0.08 * np.abs(want).max())
    np.testing.assert_allclose(exact.mean(0).numpy(), data.mean(0).numpy(), atol=0.1)
    assert np.trace(np.cov(plain.numpy().T)) < 0.9 * np.trace(want)  # what the exact step repairs
