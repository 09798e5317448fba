"""Specification tests for the diffusion core (schedules, Gaussian process, samplers, denoisers).

Everything is checked against closed forms computed here, independently of the library: the schedule
formulas, the moments of q(x_t | x_0), the Gaussian conditioning that defines q(x_{t-1} | x_t, x_0), the
ε / v parametrisations, the losses, and samplers driven by the exact (Bayes-optimal) denoiser of Gaussian
data, whose output distribution is known. Statistical tolerances are derived from the sample size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from toucan_speakemb.diffusion.denoisers import FCDenoiser, ResidualMLPDenoiser, build_denoiser
from toucan_speakemb.diffusion.gaussian import GaussianDiffusion, gaussian_optimal_denoiser
from toucan_speakemb.diffusion.schedules import SCHEDULES, make_betas

torch.set_num_threads(1)

B0, B1 = 1e-5, 1e-2  # the source presentation's beta range


def cosine_f(t, T, s=0.008):
    return math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2


def diffusion(schedule="cosine", T=50, prediction="eps", variance="small", loss="l2", b0=B0, b1=B1):
    return GaussianDiffusion(make_betas(schedule, T, b0, b1), prediction, loss, variance)


# ---- schedules ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["linear", "quadratic", "sigmoid", "cosine"])
@pytest.mark.parametrize("T", [1, 10, 1000])
def test_every_schedule_gives_T_betas_strictly_inside_0_1(name, T):
    b = make_betas(name, T, B0, B1)
    assert b.shape == (T,)
    assert b.dtype == np.float64
    assert np.all(b > 0) and np.all(b < 1)


def test_schedule_names_are_exactly_the_four_documented():
    assert set(SCHEDULES) == {"linear", "quadratic", "sigmoid", "cosine"}


@pytest.mark.parametrize("name", ["linear", "quadratic", "sigmoid", "cosine"])
def test_betas_increase_monotonically(name):
    b = make_betas(name, 200, B0, B1)
    steps = np.diff(b)
    if name == "cosine":  # strictly increasing until the final step reaches the 0.999 clip
        assert np.all(steps[:-1] > 0) and steps[-1] >= 0
    else:
        assert np.all(steps > 0)


def test_linear_schedule_hits_its_endpoints_exactly_and_is_evenly_spaced():
    b = make_betas("linear", 100, B0, B1)
    assert b[0] == B0 and b[-1] == B1
    np.testing.assert_allclose(np.diff(b), (B1 - B0) / 99, rtol=1e-9)


def test_quadratic_schedule_hits_its_endpoints_and_has_evenly_spaced_square_roots():
    b = make_betas("quadratic", 100, B0, B1)
    assert b[0] == pytest.approx(B0, rel=1e-12) and b[-1] == pytest.approx(B1, rel=1e-12)
    np.testing.assert_allclose(np.diff(np.sqrt(b)), (math.sqrt(B1) - math.sqrt(B0)) / 99, rtol=1e-9)


def test_sigmoid_schedule_is_the_logistic_of_an_even_grid_on_minus6_6():
    T = 101
    b = make_betas("sigmoid", T, B0, B1)
    expected = [B0 + (B1 - B0) / (1 + math.exp(-(-6 + 12 * i / (T - 1)))) for i in range(T)]
    np.testing.assert_allclose(b, expected, rtol=1e-12)
    # symmetric around the midpoint of the range and bounded by it
    np.testing.assert_allclose(b + b[::-1], B0 + B1, rtol=1e-12)
    assert np.all(b > B0) and np.all(b < B1)


@pytest.mark.parametrize("T", [10, 50, 1000])
def test_cosine_alpha_bar_is_f_t_over_f_0_wherever_beta_is_not_clipped(T):
    b = make_betas("cosine", T)
    abar = GaussianDiffusion(b).alphas_cumprod
    expected = np.array([cosine_f(t, T) / cosine_f(0, T) for t in range(1, T + 1)])
    unclipped = b < 0.999
    assert unclipped.sum() >= T - 1  # only the very last step can reach the clip
    np.testing.assert_allclose(abar[unclipped], expected[unclipped], rtol=1e-9, atol=1e-12)
    assert np.all(b <= 0.999)


def test_alphas_cumprod_is_the_running_product_of_one_minus_beta():
    b = make_betas("sigmoid", 40, B0, B1)
    d = GaussianDiffusion(b)
    running, expected = 1.0, []
    for beta in b:
        running *= 1.0 - beta
        expected.append(running)
    np.testing.assert_allclose(d.alphas_cumprod, expected, rtol=1e-13)
    np.testing.assert_allclose(d.alphas_cumprod_prev, [1.0] + expected[:-1], rtol=1e-13)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_betas("exponential", 10)


# ---- forward process q(x_t | x_0) -----------------------------------------------------------------------

@pytest.mark.parametrize("t_index", [0, 17, 49])
def test_q_sample_has_mean_sqrt_abar_x0_and_variance_one_minus_abar(t_index):
    d = diffusion("cosine", 50)
    n, dim = 200_000, 3
    x0_row = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    x0 = x0_row.expand(n, dim)
    t = torch.full((n,), t_index, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    xt = d.q_sample(x0, t, torch.randn(n, dim, generator=g, dtype=torch.float64))
    abar = float(np.prod(1 - d.betas[: t_index + 1]))
    var = 1 - abar
    mean_tol = 5 * math.sqrt(var / n)
    var_tol = 5 * var * math.sqrt(2 / (n - 1))
    np.testing.assert_allclose(xt.mean(0).numpy(), math.sqrt(abar) * x0_row.numpy(), atol=mean_tol)
    np.testing.assert_allclose(xt.var(0).numpy(), np.full(dim, var), atol=var_tol)


# ---- posterior q(x_{t-1} | x_t, x_0) --------------------------------------------------------------------

def test_posterior_coefficients_equal_the_closed_form():
    b = make_betas("linear", 30, B0, B1)
    d = GaussianDiffusion(b)
    for t in range(30):
        ab = float(np.prod(1 - b[: t + 1]))
        abp = float(np.prod(1 - b[:t]))  # empty product = 1 at t = 0
        assert d.posterior_coef_x0[t] == pytest.approx(math.sqrt(abp) * b[t] / (1 - ab), rel=1e-10)
        assert d.posterior_coef_xt[t] == pytest.approx(math.sqrt(1 - b[t]) * (1 - abp) / (1 - ab), rel=1e-10)
        assert d.posterior_variance[t] == pytest.approx(b[t] * (1 - abp) / (1 - ab), rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("schedule", ["cosine", "quadratic"])
def test_posterior_is_the_gaussian_conditioning_of_the_joint_of_x_prev_and_x_t(schedule):
    """Given x0: x_{t-1} = √ᾱ_{t-1} x0 + √(1-ᾱ_{t-1}) ε1 and x_t = √α_t x_{t-1} + √β_t ε2.

    So (x_{t-1}, x_t) is jointly Gaussian with Var x_{t-1} = 1-ᾱ_{t-1}, Cov = √α_t (1-ᾱ_{t-1}),
    Var x_t = α_t (1-ᾱ_{t-1}) + β_t, and x_{t-1} | x_t has mean m1 + Cov/Var(x_t)·(x_t - m2) and
    variance Var x_{t-1} - Cov²/Var x_t.
    """
    T = 40
    b = make_betas(schedule, T, B0, B1)
    d = GaussianDiffusion(b)
    g = torch.Generator().manual_seed(1)
    for t_index in (0, 1, 7, 20, T - 1):
        x0 = torch.randn(5, 4, generator=g, dtype=torch.float64)
        xt = torch.randn(5, 4, generator=g, dtype=torch.float64)
        t = torch.full((5,), t_index, dtype=torch.long)
        mean, var = d.q_posterior(x0, xt, t)

        alpha = 1 - b[t_index]
        abar_prev = float(np.prod(1 - b[:t_index]))
        var_prev = 1 - abar_prev
        cov = math.sqrt(alpha) * var_prev
        var_t = alpha * var_prev + b[t_index]
        m1 = math.sqrt(abar_prev) * x0
        m2 = math.sqrt(abar_prev * alpha) * x0
        cond_mean = m1 + cov / var_t * (xt - m2)
        cond_var = var_prev - cov**2 / var_t

        np.testing.assert_allclose(mean.numpy(), cond_mean.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(var.numpy().ravel(), np.full(5, cond_var), rtol=1e-9, atol=1e-15)
        if t_index == 0:  # the first step is fully determined by x0
            np.testing.assert_allclose(mean.numpy(), x0.numpy(), atol=1e-12)


# ---- ε and v parametrisations ---------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_target_and_x0_and_eps_invert_each_other(prediction):
    d = diffusion("cosine", 100, prediction=prediction)
    g = torch.Generator().manual_seed(2)
    n = 64
    x0 = torch.randn(n, 5, generator=g, dtype=torch.float64) * 3
    eps = torch.randn(n, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 99, (n,), generator=g)  # the clipped last step (ᾱ ~ 1e-3) is checked elsewhere
    xt = d.q_sample(x0, t, eps)
    x0_back, eps_back = d.x0_and_eps(xt, t, d.target(x0, t, eps))
    np.testing.assert_allclose(x0_back.numpy(), x0.numpy(), atol=1e-9)
    np.testing.assert_allclose(eps_back.numpy(), eps.numpy(), atol=1e-9)


def test_v_target_is_sqrt_abar_eps_minus_sqrt_one_minus_abar_x0():
    d = diffusion("cosine", 30, prediction="v")
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(30, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(30, 3, generator=g, dtype=torch.float64)
    t = torch.arange(30)
    abar = np.cumprod(1 - d.betas)
    expected = np.sqrt(abar)[:, None] * eps.numpy() - np.sqrt(1 - abar)[:, None] * x0.numpy()
    np.testing.assert_allclose(d.target(x0, t, eps).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_eps_target_is_the_noise_itself():
    d = diffusion("linear", 30, prediction="eps")
    eps = torch.randn(30, 3, dtype=torch.float64)
    assert torch.equal(d.target(torch.randn(30, 3, dtype=torch.float64), torch.arange(30), eps), eps)


# ---- training loss --------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_training_loss_is_mean_abs_or_squared_error_of_model_output_at_x_t_against_target(prediction, loss):
    d = diffusion("cosine", 20, prediction=prediction, loss=loss)
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(8, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 20, (8,), generator=g)
    seen = {}

    def model(xt, tt):  # a "network" whose output is known: 0.3 x_t + 0.1
        seen["xt"], seen["t"] = xt, tt
        return 0.3 * xt + 0.1

    value = float(d.training_loss(model, x0, t, eps))

    abar = np.cumprod(1 - d.betas)[t.numpy()][:, None]
    xt = np.sqrt(abar) * x0.numpy() + np.sqrt(1 - abar) * eps.numpy()
    target = eps.numpy() if prediction == "eps" else np.sqrt(abar) * eps.numpy() - np.sqrt(1 - abar) * x0.numpy()
    err = (0.3 * xt + 0.1) - target
    expected = np.mean(np.abs(err)) if loss == "l1" else np.mean(err**2)
    assert value == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(seen["xt"].numpy(), xt, rtol=1e-10)
    assert torch.equal(seen["t"], t)


def test_l1_and_l2_losses_differ_on_the_same_input():
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(8, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 20, (8,), generator=g)
    model = lambda xt, tt: torch.full_like(xt, 2.0)  # noqa: E731
    l1 = float(diffusion(T=20, loss="l1").training_loss(model, x0, t, eps))
    l2 = float(diffusion(T=20, loss="l2").training_loss(model, x0, t, eps))
    assert l1 == pytest.approx(float((2.0 - eps).abs().mean()))
    assert l2 == pytest.approx(float(((2.0 - eps) ** 2).mean()))


@pytest.mark.parametrize("kw", [dict(prediction="x0"), dict(loss="huber"), dict(variance="medium")])
def test_unknown_prediction_loss_or_variance_is_refused(kw):
    with pytest.raises(ValueError, match="unknown"):
        GaussianDiffusion(make_betas("cosine", 10), **kw)


# ---- samplers with the exact denoiser -------------------------------------------------------------------

def whitened_moments(y: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor):
    """Mean and covariance of Σ^{-1/2}(y - μ): 0 and I exactly when y ~ N(μ, Σ)."""
    evals, evecs = torch.linalg.eigh(cov)
    w = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    z = (y - mu) @ w.T
    return z.mean(0), torch.cov(z.T)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_reverse_step_mean_is_sqrt_alpha_x_t_for_standard_normal_data(prediction):
    """For data N(0, I) every marginal is N(0, I), so x_{t-1} | x_t ~ N(√α_t x_t, β_t I) exactly."""
    d = diffusion("cosine", 50, prediction=prediction, variance="large")
    dim = 3
    model = gaussian_optimal_denoiser(d, torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64))
    g = torch.Generator().manual_seed(6)
    x = torch.randn(10, dim, generator=g, dtype=torch.float64) * 2
    for i in range(1, 50):
        t = torch.full((10,), i, dtype=torch.long)
        x0, _ = d.x0_and_eps(x, t, model(x, t))
        mean, _ = d.q_posterior(x0, x, t)
        np.testing.assert_allclose(mean.numpy(), math.sqrt(1 - d.betas[i]) * x.numpy(), rtol=1e-9, atol=1e-10)


def test_ancestral_large_variance_sampling_of_standard_normal_data_gives_standard_normal():
    d = diffusion("cosine", 50, prediction="eps", variance="large")
    n, dim = 20_000, 3
    model = gaussian_optimal_denoiser(d, torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64))
    g = torch.Generator().manual_seed(7)
    y = d.p_sample_loop(model, torch.randn(n, dim, generator=g, dtype=torch.float64), generator=g)
    mean_tol = 5 / math.sqrt(n)
    cov_tol = 5 * math.sqrt(2 / n)
    np.testing.assert_allclose(y.mean(0).numpy(), np.zeros(dim), atol=mean_tol)
    np.testing.assert_allclose(torch.cov(y.T).numpy(), np.eye(dim), atol=cov_tol)


def test_ancestral_small_variance_differs_from_large_when_beta_tilde_is_used():
    """The two variance choices must actually be used: β̃_t < β_t, so the 'small' chain ends narrower."""
    n, dim = 20_000, 2
    out = {}
    for variance in ("small", "large"):
        d = diffusion("cosine", 20, prediction="eps", variance=variance)
        model = gaussian_optimal_denoiser(d, torch.zeros(dim, dtype=torch.float64),
                                          torch.eye(dim, dtype=torch.float64))
        g = torch.Generator().manual_seed(8)
        out[variance] = d.p_sample_loop(model, torch.randn(n, dim, generator=g, dtype=torch.float64), generator=g)
    assert float(out["small"].var(0).mean()) < float(out["large"].var(0).mean()) - 10 * math.sqrt(2 / n)


MU = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
_A = torch.tensor([[1.5, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.5, 0.3, 0.4]], dtype=torch.float64)
SIGMA = _A @ _A.T  # non-isotropic, correlated, eigenvalues spread over ~1.5 decades

# What a discretised sampler may be off by, on top of sampling noise, in whitened units.
DISCRETISATION = 0.05


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddim_with_many_steps_recovers_a_non_isotropic_gaussian(prediction):
    d = diffusion("cosine", 1000, prediction=prediction)
    model = gaussian_optimal_denoiser(d, MU, SIGMA)
    n = 10_000
    g = torch.Generator().manual_seed(9)
    y = d.ddim_sample_loop(model, torch.randn(n, 3, generator=g, dtype=torch.float64), steps=250)
    m, c = whitened_moments(y, MU, SIGMA)
    np.testing.assert_allclose(m.numpy(), 0, atol=5 / math.sqrt(n) + DISCRETISATION)
    np.testing.assert_allclose(c.numpy(), np.eye(3), atol=5 * math.sqrt(2 / n) + DISCRETISATION)


@pytest.mark.parametrize("dim", [2, 4])
def test_ancestral_small_variance_recovers_a_non_isotropic_gaussian(dim):
    g = torch.Generator().manual_seed(10 + dim)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    sigma = a @ a.T + 0.2 * torch.eye(dim, dtype=torch.float64)
    mu = torch.linspace(-2, 2, dim, dtype=torch.float64)
    d = diffusion("cosine", 500, prediction="v", variance="small")
    model = gaussian_optimal_denoiser(d, mu, sigma)
    n = 10_000
    y = d.p_sample_loop(model, torch.randn(n, dim, generator=g, dtype=torch.float64), generator=g)
    m, c = whitened_moments(y, mu, sigma)
    np.testing.assert_allclose(m.numpy(), 0, atol=5 / math.sqrt(n) + DISCRETISATION)
    np.testing.assert_allclose(c.numpy(), np.eye(dim), atol=5 * math.sqrt(2 / n) + DISCRETISATION)


def _ddim_affine_map(d, model, steps, dim):
    """With a linear denoiser and eta = 0, DDIM is an affine map x_T -> A x_T + b; read A and b off exactly."""
    probes = torch.cat([torch.zeros(1, dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)])
    y = d.ddim_sample_loop(model, probes, steps=steps)
    b = y[0]
    return (y[1:] - b).T, b


def test_ddim_converges_to_the_exact_gaussian_at_first_order_in_the_number_of_steps():
    d = diffusion("cosine", 1000, prediction="v")
    model = gaussian_optimal_denoiser(d, MU, SIGMA)
    errs = {}
    for steps in (100, 200, 1000):
        a, b = _ddim_affine_map(d, model, steps, 3)
        errs[steps] = float((a @ a.T - SIGMA).abs().max())  # the output is exactly N(b, A Aᵀ)
        np.testing.assert_allclose(b.numpy(), MU.numpy(), atol=1e-3)
    ratio = errs[200] / errs[100]
    assert 0.35 < ratio < 0.65, errs  # halving the step size halves the error
    assert errs[1000] < errs[200] / 3
    assert errs[1000] < 0.02 * float(SIGMA.abs().max())


def test_ddim_with_eta_zero_is_deterministic_and_ignores_the_generator():
    d = diffusion("cosine", 100, prediction="v")
    model = gaussian_optimal_denoiser(d, MU, SIGMA)
    x_T = torch.randn(50, 3, dtype=torch.float64)
    y1 = d.ddim_sample_loop(model, x_T.clone(), steps=20, eta=0.0, generator=torch.Generator().manual_seed(1))
    y2 = d.ddim_sample_loop(model, x_T.clone(), steps=20, eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(y1, y2)


def test_ddim_with_positive_eta_uses_the_generator():
    d = diffusion("cosine", 100, prediction="v")
    model = gaussian_optimal_denoiser(d, MU, SIGMA)
    x_T = torch.randn(50, 3, dtype=torch.float64)
    y1 = d.ddim_sample_loop(model, x_T.clone(), steps=20, eta=1.0, generator=torch.Generator().manual_seed(1))
    y2 = d.ddim_sample_loop(model, x_T.clone(), steps=20, eta=1.0, generator=torch.Generator().manual_seed(2))
    y3 = d.ddim_sample_loop(model, x_T.clone(), steps=20, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(y1, y2)
    assert torch.equal(y1, y3)


@pytest.mark.parametrize("T", [1, 2, 7, 10, 50, 999, 1000])
def test_ddim_timesteps_are_strictly_decreasing_start_at_T_minus_1_and_have_the_requested_length(T):
    for steps in sorted({1, 2, 3, T // 3, T // 2, T - 1, T} & set(range(1, T + 1))):
        ts = GaussianDiffusion.ddim_timesteps(T, steps)
        assert len(ts) == steps, (T, steps, ts)
        assert ts[0] == T - 1
        assert np.all(np.diff(ts) < 0)
        assert ts[-1] >= 0
    np.testing.assert_array_equal(GaussianDiffusion.ddim_timesteps(T, T), np.arange(T)[::-1])


@pytest.mark.parametrize("steps", [0, -1, 11])
def test_ddim_timesteps_refuse_a_step_count_outside_1_T(steps):
    with pytest.raises(ValueError):
        GaussianDiffusion.ddim_timesteps(10, steps)


# ---- denoisers ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,options", [
    ("fc3", {"hidden": 16}),
    ("resmlp", {"hidden": 16, "blocks": 2, "expansion": 2, "time_dim": 8, "dropout": 0.0}),
])
def test_denoiser_output_has_the_input_shape(kind, options):
    net = build_denoiser(kind, 7, 100, options)
    out = net(torch.randn(5, 7), torch.randint(0, 100, (5,)))
    assert out.shape == (5, 7)


def test_residual_mlp_denoiser_predicts_exactly_zero_at_initialisation():
    torch.manual_seed(0)
    net = ResidualMLPDenoiser(6, 100, hidden=32, blocks=2, time_dim=16)
    out = net(torch.randn(20, 6) * 5, torch.randint(0, 100, (20,)))
    assert torch.count_nonzero(out) == 0


def test_residual_mlp_blocks_start_as_the_identity():
    torch.manual_seed(0)
    net = ResidualMLPDenoiser(6, 100, hidden=32, blocks=3, time_dim=16)
    h = torch.randn(20, 32)
    c = torch.randn(20, 32)
    for block in net.blocks:
        assert torch.equal(block(h, c), h)


def test_residual_mlp_blocks_stop_being_the_identity_once_modulation_is_nonzero():
    """The identity above comes from the zero-initialised gate, not from a block that ignores its input."""
    torch.manual_seed(0)
    net = ResidualMLPDenoiser(6, 100, hidden=32, blocks=1, time_dim=16)
    block = net.blocks[0]
    with torch.no_grad():
        block.modulation.bias.fill_(0.5)
    h, c = torch.randn(4, 32), torch.randn(4, 32)
    assert not torch.allclose(block(h, c), h)


def test_fc_denoiser_is_three_linear_layers_on_x_and_t():
    net = FCDenoiser(6, 100, hidden=32)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    assert linears[0].in_features == 7  # x_t and t/T
    assert linears[-1].out_features == 6


def test_unknown_denoiser_kind_is_refused():
    with pytest.raises(ValueError, match="unknown denoiser"):
        build_denoiser("transformer", 4, 10, {})
