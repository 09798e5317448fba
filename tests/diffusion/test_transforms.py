"""Data transforms stored with the model (quantile-normal, radial) and the Gaussian-residual denoiser."""

import numpy as np
import pytest
import torch

from toucan_speakemb.diffusion.denoisers import GaussianResidual, ResidualMLPDenoiser
from toucan_speakemb.diffusion.gaussian import (
    GaussianDiffusion,
    gaussian_flow_step,
    gaussian_optimal_denoiser,
    gaussian_posterior_x0,
)
from toucan_speakemb.diffusion.schedules import make_betas
from toucan_speakemb.diffusion.standardize import Standardizer


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


def test_clipping_keeps_every_generated_value_inside_its_dimensions_training_range_and_only_then_acts():
    x = nonneg_data()
    plain, clipped = Standardizer.fit(x, kind="standard"), Standardizer.fit(x, kind="standard", clip=True)
    z = np.random.default_rng(1).normal(0, 3, (5000, x.shape[1]))  # far wider than the data
    g, free = clipped.inverse(z), plain.inverse(z)
    assert free.min() < 0 and g.min() >= 0  # the standard transform alone breaks the ReLU floor; clipped, it holds
    assert np.all(g >= x.min(0) - 1e-6) and np.all(g <= x.max(0) + 1e-6)
    inside = np.all((free >= x.min(0)) & (free <= x.max(0)), axis=1)
    np.testing.assert_array_equal(g[inside], free[inside])  # values inside the range are left as they are
    np.testing.assert_allclose(clipped.forward(x), plain.forward(x))  # the model's space is the same
    back = Standardizer.from_arrays({k: v.copy() for k, v in clipped.to_arrays().items()})
    assert back.same_as(clipped) and not back.same_as(plain)


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


def test_autoguidance_scales_the_networks_correction_to_the_gaussian_fit_and_is_no_saved_state():
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(make_betas("cosine", 50))
    model = GaussianResidual(ResidualMLPDenoiser(3, 50, hidden=8, blocks=1), 3, diffusion.alphas_cumprod, "v")
    model.fit_gaussian(torch.randn(200, 3) * torch.tensor([1.0, 2.0, 0.5]))
    torch.nn.init.normal_(model.net.out.weight)  # a network that corrects something
    for block in model.net.blocks:
        torch.nn.init.normal_(block.modulation.bias)
    x, t = torch.randn(6, 3), torch.tensor([0, 5, 10, 20, 40, 49])
    with torch.no_grad():
        gaussian, plain = model.gaussian_prediction(x, t), model(x, t)
        assert (plain - gaussian).abs().max() > 1e-3
        model.correction_scale = 1.5
        torch.testing.assert_close(model(x, t), gaussian + 1.5 * (plain - gaussian))
        model.correction_scale = 0.0
        torch.testing.assert_close(model(x, t), gaussian)  # 0: the Gaussian fit alone
    assert not any("scale" in k for k in model.state_dict())


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
    noise = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    xt = abar_t**0.5 * x0 + (1 - abar_t) ** 0.5 * noise
    xs = gaussian_flow_step(xt, abar_t, abar_s, mean, vecs, vals)
    want_cov = abar_s * cov + (1 - abar_s) * torch.eye(3, dtype=torch.float64)
    np.testing.assert_allclose(xs.mean(0).numpy(), abar_s**0.5 * mean.numpy(), atol=0.03)
    # sampling error of a covariance entry of size ~5.5 from 40000 rows: ~0.04; allow 4 of them
    np.testing.assert_allclose(np.cov(xs.numpy().T), want_cov.numpy(), atol=0.16)


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


def test_ddim_inversion_with_the_exact_gaussian_step_is_the_gaussian_flow_and_round_trips_exactly():
    rng = np.random.default_rng(10)
    a = rng.normal(size=(3, 3))
    data = torch.tensor(rng.normal(size=(500, 3)) @ a.T * 2 + np.array([1.0, -2.0, 0.5]), dtype=torch.float32)
    diffusion = GaussianDiffusion(make_betas("cosine", 1000), prediction="v")
    model = GaussianResidual(ResidualMLPDenoiser(3, 1000, hidden=16, blocks=1), 3, diffusion.alphas_cumprod, "v")
    model.fit_gaussian(data)  # the network's output is zero at initialisation: the Gaussian fit alone
    ts = diffusion.ddim_timesteps(1000, 7)
    with torch.no_grad():
        noise = diffusion.ddim_invert_loop(model, data, timesteps=ts, gaussian=model)
        back = diffusion.ddim_sample_loop(model, noise, timesteps=ts, gaussian=model)
    flow = gaussian_flow_step(data, 1.0, float(diffusion.alphas_cumprod[ts[0]]), model.mean, model.eigvecs, model.eigvals)
    np.testing.assert_allclose(noise.numpy(), flow.numpy(), atol=1e-5)
    np.testing.assert_allclose(back.numpy(), data.numpy(), atol=2e-4)
    # the flow whitens: the noise of the training rows is (close to) standard normal
    np.testing.assert_allclose(np.cov(noise.numpy().T), np.eye(3), atol=0.02)


def test_ddim_inversion_of_a_gaussian_plus_a_network_converges_with_the_number_of_steps():
    """With a nonzero network the correction's steps are first order: the round trip improves with steps."""
    rng = np.random.default_rng(12)
    data = torch.tensor(rng.normal(size=(300, 3)) * np.array([2.0, 1.0, 0.5]), dtype=torch.float32)
    diffusion = GaussianDiffusion(make_betas("cosine", 1000), prediction="v")
    model = GaussianResidual(ResidualMLPDenoiser(3, 1000, hidden=16, blocks=1), 3, diffusion.alphas_cumprod, "v")
    model.fit_gaussian(data)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.net.parameters():  # a network whose correction is far from zero
            p.normal_(0, 0.3)
    errors = {}
    for steps in (10, 40, 160):
        ts = diffusion.ddim_timesteps(1000, steps)
        with torch.no_grad():
            noise = diffusion.ddim_invert_loop(model, data, timesteps=ts, gaussian=model)
            back = diffusion.ddim_sample_loop(model, noise, timesteps=ts, gaussian=model)
        errors[steps] = float((back - data).abs().mean())
    assert errors[160] < errors[40] < errors[10], errors
    assert errors[160] < errors[10] / 6, errors  # 16x the steps
    assert errors[160] < 0.05 * float(data.std(0).mean()), errors


def test_plain_ddim_inversion_round_trips_with_an_error_that_falls_with_the_number_of_steps():
    """No exact part: every step evaluates the model where it stands, so the round trip data -> noise -> data
    is off at first order in the step size."""
    rng = np.random.default_rng(11)
    mean = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    a = torch.tensor(rng.normal(size=(3, 3)))
    cov = a @ a.T + 0.1 * torch.eye(3, dtype=torch.float64)
    diffusion = GaussianDiffusion(make_betas("cosine", 1000), prediction="eps")
    model = gaussian_optimal_denoiser(diffusion, mean, cov)
    x = torch.tensor(rng.multivariate_normal(mean.numpy(), cov.numpy(), 200))
    errors = {}
    for steps in (20, 80, 320):
        noise = diffusion.ddim_invert_loop(model, x, steps=steps)
        errors[steps] = float((diffusion.ddim_sample_loop(model, noise, steps=steps) - x).abs().mean())
    assert errors[320] < errors[80] < errors[20], errors
    assert errors[320] < errors[20] / 8  # 16x the steps: first order would give 1/16
    assert errors[320] < 0.01 * float(x.std(0).mean())


# ---- polar transform: direction and length apart ------------------------------------------------------

def fixed_length_data(n=200, d=8, seed=5):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(0.3, 1, (n, d)), 0) + 1e-3
    return x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0.94, 0.97, (n, 1))


@pytest.mark.parametrize("kind", ["standard", "quantile"])
def test_polar_transform_adds_one_coordinate_and_round_trips(kind):
    x = fixed_length_data()
    st = Standardizer.fit(x, kind=kind, polar=True)
    z = st.forward(x)
    assert z.shape == (200, 9) and st.dim == 8 and st.model_dim == 9
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)  # the length score is standardised like the rest
    np.testing.assert_allclose(st.inverse(z), x, atol=2e-3)


def test_polar_transform_gives_every_vector_a_training_length_and_keeps_signs_whatever_the_model_outputs():
    x = fixed_length_data()
    st = Standardizer.fit(x, kind="quantile", polar=True)
    g = st.inverse(np.random.default_rng(1).normal(0, 3, (3000, 9)))
    norms, r = np.linalg.norm(g, axis=1), np.linalg.norm(x, axis=1)
    assert norms.min() >= r.min() - 1e-5 and norms.max() <= r.max() + 1e-5
    assert g.min() >= 0


def test_polar_length_comes_from_the_last_coordinate_only_and_direction_from_the_others():
    x = fixed_length_data()
    st = Standardizer.fit(x, kind="standard", polar=True)
    z = st.forward(x[:2])
    swapped = np.concatenate([z[:1, :-1], z[1:, -1:]], axis=1)  # direction of row 0, length of row 1
    g = st.inverse(swapped)[0]
    np.testing.assert_allclose(np.linalg.norm(g), np.linalg.norm(x[1]), rtol=1e-3)
    np.testing.assert_allclose(g / np.linalg.norm(g), x[0] / np.linalg.norm(x[0]), atol=1e-5)


def test_polar_transform_survives_saving_as_arrays():
    x = fixed_length_data()
    st = Standardizer.fit(x, kind="quantile", polar=True)
    back = Standardizer.from_arrays({k: v.copy() for k, v in st.to_arrays().items()})
    assert back.same_as(st) and back.model_dim == 9
    assert not back.same_as(Standardizer.fit(x, kind="quantile"))


def test_radial_and_polar_exclude_each_other():
    with pytest.raises(ValueError, match="exclude"):
        Standardizer.fit(fixed_length_data(), radial=True, polar=True)


# ---- principal subspace (probabilistic PCA) ------------------------------------------------------------

def low_rank_plus_scatter(n, d, rank, scatter, seed=0):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, rank)))[0]
    return (rng.normal(size=(n, rank)) * np.linspace(3, 2, rank)) @ basis.T + scatter * rng.normal(size=(n, d))


def test_ppca_heldout_likelihood_equals_the_density_of_the_ppca_covariance():
    from scipy.stats import multivariate_normal

    from toucan_speakemb.diffusion.subspace import ppca_heldout_loglik

    rng = np.random.default_rng(2)
    fit, test = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6)), rng.normal(size=(15, 6))
    ll = ppca_heldout_loglik(fit, test, max_k=5)
    mu, cov = fit.mean(0), np.cov(fit.T)
    lam, vecs = np.linalg.eigh(cov)
    lam, vecs = lam[::-1], vecs[:, ::-1]
    for k in (0, 2, 5):
        vals = np.concatenate([lam[:k], np.full(6 - k, lam[k:].mean())])
        expected = multivariate_normal(mu, (vecs * vals) @ vecs.T).logpdf(test).mean()
        assert ll[k] == pytest.approx(expected, rel=1e-9)


def test_subspace_dimension_is_the_rank_of_the_structure_above_isotropic_scatter():
    from toucan_speakemb.diffusion.subspace import choose_subspace_dims

    assert choose_subspace_dims(low_rank_plus_scatter(600, 20, 4, 0.3)) == 4
    assert choose_subspace_dims(low_rank_plus_scatter(600, 20, 9, 0.3, seed=1)) == 9


@pytest.mark.parametrize("rest", ["isotropic", "full"])
def test_subspace_gaussian_keeps_the_top_variances_and_the_total_and_pools_the_rest_only_when_isotropic(rest):
    data = torch.tensor(low_rank_plus_scatter(500, 10, 3, 0.5), dtype=torch.float32)
    diffusion = GaussianDiffusion(make_betas("cosine", 50))
    full = GaussianResidual(ResidualMLPDenoiser(10, 50, hidden=8, blocks=1), 10, diffusion.alphas_cumprod, "v")
    sub = GaussianResidual(ResidualMLPDenoiser(3, 50, hidden=8, blocks=1), 10, diffusion.alphas_cumprod, "v", 3,
                           rest=rest)
    full.fit_gaussian(data)
    sub.fit_gaussian(data)
    full_vals = full.eigvals.sort(descending=True).values  # the subspace model lists the largest first
    torch.testing.assert_close(sub.eigvals[:3], full_vals[:3])
    rest_vals = full_vals[3:].mean().expand(7) if rest == "isotropic" else full_vals[3:]
    torch.testing.assert_close(sub.eigvals[3:], rest_vals)
    torch.testing.assert_close(sub.eigvals.sum(), full_vals.sum())
    torch.testing.assert_close(sub.basis.T @ sub.basis, torch.eye(3), atol=1e-5, rtol=0)


def test_subspace_network_corrects_only_the_principal_directions():
    data = torch.tensor(low_rank_plus_scatter(300, 10, 3, 0.5), dtype=torch.float32)
    diffusion = GaussianDiffusion(make_betas("cosine", 50))
    model = GaussianResidual(ResidualMLPDenoiser(3, 50, hidden=8, blocks=1), 10, diffusion.alphas_cumprod, "v", 3)
    model.fit_gaussian(data)
    torch.nn.init.normal_(model.net.out.weight)  # a trained-looking network
    x, t = torch.randn(20, 10), torch.randint(50, (20,))
    corr = model.correction(x, t)
    assert corr.abs().max() > 0
    rest = torch.eye(10) - model.basis @ model.basis.T
    assert (corr @ rest).abs().max() < 1e-5
    # inputs that differ only outside the subspace get the same correction
    torch.testing.assert_close(model.correction(x + torch.randn(20, 10) @ rest, t), corr, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prediction", ["v", "eps"])
@pytest.mark.parametrize("conditional", [False, True])
def test_loss_in_the_eigenbasis_is_the_training_loss_with_rotated_rows_and_noise_value_and_gradient(
        prediction, conditional):
    data = torch.tensor(low_rank_plus_scatter(300, 10, 3, 0.5), dtype=torch.float32) + 1.0
    diffusion = GaussianDiffusion(make_betas("cosine", 50), prediction=prediction)
    conditions = {"gender": 2} if conditional else None
    net = ResidualMLPDenoiser(3, 50, hidden=8, blocks=1, conditions=conditions)
    model = GaussianResidual(net, 10, diffusion.alphas_cumprod, prediction, 3, conditions=conditions)
    model.fit_gaussian(data)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 4, (300, 1), generator=g) if conditional else None
    if conditional:
        model.fit_condition_offsets(data, codes)
        assert model.offset0.abs().max() > 0  # the conditional mean moves: the rotated offsets are exercised
    for p in model.net.parameters():  # a trained-looking network
        p.data += 0.1 * torch.randn(p.shape, generator=g)
    x0, t, noise = data[:64], torch.randint(50, (64,), generator=g), torch.randn(64, 10, generator=g)
    cond = None if codes is None else codes[:64]
    v = model.eigvecs

    def loss_and_grads(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.net.parameters()]

    direct, g_direct = loss_and_grads(lambda: diffusion.training_loss(model, x0, t, noise @ v.T, cond))
    rotated, g_rotated = loss_and_grads(lambda: model.loss_in_eigenbasis(diffusion, x0 @ v, t, noise, cond))
    assert model.trains_in_eigenbasis(diffusion)
    l1 = GaussianDiffusion(make_betas("cosine", 50), prediction=prediction, loss="l1")
    assert not model.trains_in_eigenbasis(l1)  # an L1 loss changes under rotation
    with pytest.raises(ValueError):
        model.loss_in_eigenbasis(l1, x0 @ v, t, noise, cond)
    assert rotated == pytest.approx(direct, rel=1e-5)
    for a, b in zip(g_direct, g_rotated):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("conditional", [False, True])
def test_the_sampler_runs_in_the_eigenbasis_with_the_same_voices_and_inversion_as_in_the_data_coordinates(
        conditional):
    from toucan_speakemb.generate.generator import GuidedDenoiser

    data = torch.tensor(low_rank_plus_scatter(300, 10, 3, 0.5), dtype=torch.float32) + 1.0
    diffusion = GaussianDiffusion(make_betas("cosine", 50), prediction="v")
    conditions = {"gender": 2} if conditional else None
    model = GaussianResidual(ResidualMLPDenoiser(3, 50, hidden=8, blocks=1, conditions=conditions), 10,
                             diffusion.alphas_cumprod, "v", 3, conditions=conditions)
    model.fit_gaussian(data)
    g = torch.Generator().manual_seed(1)
    if conditional:
        model.fit_condition_offsets(data, torch.randint(0, 4, (300, 1), generator=g))
    for p in model.net.parameters():  # a trained-looking network
        p.data += 0.3 * torch.randn(p.shape, generator=g)
    model.correction_scale = 1.3  # autoguidance applies in both bases
    sampler = GuidedDenoiser(model, torch.tensor([1]), 2.0) if conditional else model

    class InDataCoordinates:  # the same Gaussian part with only the basic contract: no eigenbasis path
        def __init__(self, part):
            self.mean, self.eigvecs, self.eigvals, self.correction = part.mean, part.eigvecs, part.eigvals, part.correction

    assert sampler.eigen_subspace() == 3
    x_T = torch.randn(64, 10, generator=g)
    fast = diffusion.ddim_sample_loop(sampler, x_T, steps=10, gaussian=sampler)
    slow = diffusion.ddim_sample_loop(sampler, x_T, steps=10, gaussian=InDataCoordinates(sampler))
    assert (fast - data.mean(0)).abs().max() > 0.5  # voices, not the mean
    torch.testing.assert_close(fast, slow, atol=2e-5, rtol=1e-5)
    back = diffusion.ddim_invert_loop(sampler, fast, steps=10, gaussian=sampler)
    torch.testing.assert_close(back, diffusion.ddim_invert_loop(sampler, fast, steps=10,
                                                                gaussian=InDataCoordinates(sampler)), atol=2e-5, rtol=1e-5)
    # a basis that is not the eigenvectors' leading columns (e.g. a hand-edited file): no eigenbasis path
    model.basis.copy_(torch.linalg.qr(torch.randn(10, 3, generator=g))[0])
    assert model.eigen_subspace() is None and sampler.eigen_subspace() is None


def subspace_gaussian(n: int = 300, dim: int = 10, k: int = 3):
    """(diffusion, data, a Gaussian-residual model fitted to them whose network reads the k principal ones)."""
    data = torch.tensor(low_rank_plus_scatter(n, dim, k, 0.5), dtype=torch.float32)
    diffusion = GaussianDiffusion(make_betas("cosine", 50), prediction="v")
    model = GaussianResidual(ResidualMLPDenoiser(k, 50, hidden=8, blocks=1), dim, diffusion.alphas_cumprod, "v", k)
    model.fit_gaussian(data)
    return diffusion, data, model


def test_the_initial_noise_is_tempered_by_the_rest_ratio_outside_the_networks_subspace_only():
    from toucan_speakemb.diffusion.gaussian import tempered

    diffusion, data, model = subspace_gaussian()
    x = torch.randn(40, 10, generator=torch.Generator().manual_seed(0))
    v = model.eigvecs
    out = tempered(x, 1.2, model, 0.5) @ v
    torch.testing.assert_close(out[:, :3], 1.2 * (x @ v)[:, :3], atol=1e-5, rtol=1e-5)  # the modelled directions
    torch.testing.assert_close(out[:, 3:], 0.6 * (x @ v)[:, 3:], atol=1e-5, rtol=1e-5)  # the Gaussian's own
    assert torch.equal(tempered(x, 1.2, model, 1.0), x * 1.2)  # one temperature: the plain product, bit for bit
    assert torch.equal(tempered(x, 1.2, None, 0.5), x * 1.2)  # no Gaussian part, no subspace: nothing apart
    full = GaussianResidual(ResidualMLPDenoiser(10, 50, hidden=8, blocks=1), 10, diffusion.alphas_cumprod, "v")
    full.fit_gaussian(data)
    assert torch.equal(tempered(x, 1.2, full, 0.5), x * 1.2)


def test_direction_factors_scale_each_modelled_coordinate_of_the_initial_noise_and_no_other():
    from toucan_speakemb.diffusion.gaussian import tempered

    _, _, model = subspace_gaussian()
    x = torch.randn(40, 10, generator=torch.Generator().manual_seed(0))
    c = x @ model.eigvecs
    out = tempered(x, 1.2, model, 0.5, [2.0, 1.0, 0.5]) @ model.eigvecs
    torch.testing.assert_close(out[:, :3], 1.2 * torch.tensor([2.0, 1.0, 0.5]) * c[:, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 3:], 0.6 * c[:, 3:], atol=1e-5, rtol=1e-5)
    # with one temperature for the rest, the factors still apply
    out = tempered(x, 1.2, model, 1.0, [2.0, 1.0, 0.5]) @ model.eigvecs
    torch.testing.assert_close(out[:, :3], 1.2 * torch.tensor([2.0, 1.0, 0.5]) * c[:, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 3:], 1.2 * c[:, 3:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="2 direction factors for a subspace of 3"):
        tempered(x, 1.2, model, 0.5, [2.0, 1.0])
    with pytest.raises(ValueError, match="no principal subspace"):  # factors for nothing are a caller's error
        tempered(x, 1.2, None, 1.0, [2.0, 1.0, 0.5])


def test_variance_factors_give_the_gaussian_fit_the_variance_they_aim_at():
    # the Gaussian part's deterministic sampler is linear in x_T: a factor s on a coordinate's noise scales its
    # voices' spread by s, so strength 1 turns voices of variance v into voices of the training variance λ
    from toucan_speakemb.diffusion.gaussian import tempered, variance_scales

    diffusion, _, model = subspace_gaussian(n=2000)
    lam = model.eigvals[:3].double().numpy()
    np.testing.assert_allclose(variance_scales(lam / 4, lam, 1.0), 2.0)
    np.testing.assert_allclose(variance_scales(lam / 4, lam, 0.5), 2 ** 0.5)
    np.testing.assert_allclose(variance_scales(lam * 0.3, lam, 0.0), 1.0)
    factors = variance_scales(lam * np.array([0.25, 1.0, 4.0]), lam, 1.0)  # as if shrunk, right, and spread
    x_T = torch.randn(4000, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = diffusion.ddim_sample_loop(model, tempered(x_T, 1.0, model, 1.0, factors), steps=10, gaussian=model)
    spread = ((z - model.mean) @ model.eigvecs)[:, :3].double().var(0).numpy()
    np.testing.assert_allclose(spread / lam, [4.0, 1.0, 0.25], rtol=0.08)
    for bad in ([1.0, 0.0, 1.0], [1.0, -2.0, 1.0]):
        with pytest.raises(ValueError, match="positive"):
            variance_scales(np.array(bad), lam, 0.5)


@pytest.mark.parametrize("dim,k", [(50, 3), (65, 7), (64, 6)])
def test_tempered_noise_of_a_row_does_not_depend_on_its_place_in_the_block(dim, k):
    from toucan_speakemb.diffusion.gaussian import tempered

    _, _, model = subspace_gaussian(dim=dim, k=k)
    block = torch.randn(256, dim, generator=torch.Generator().manual_seed(3))
    factors = np.linspace(0.8, 1.3, k)
    together = tempered(block, 1.2, model, 0.7)
    shaped = tempered(block, 1.2, model, 0.7, factors)
    for i in (0, 5, 37, 255):
        alone = torch.zeros_like(block)
        alone[0] = block[i]  # the row first in a block of zeros, as a voice sampled alone
        assert torch.equal(tempered(alone, 1.2, model, 0.7)[0], together[i])
        assert torch.equal(tempered(alone, 1.2, model, 0.7, factors)[0], shaped[i])
        x_t = torch.zeros_like(block)
        x_t[0] = block[i]
        t = torch.full((256,), 10)
        assert torch.equal(model.correction(x_t, t)[0], model.correction(block, t)[i])  # the network's input too
