"""The MEow network: a normalised policy, Q - V = alpha * log pi, exact V, and the fused loss."""
import math
import os
import sys

import pytest
import torch

from meow_continuous_action import Batch, FlowPolicy, make_optimizer, make_update, meow_loss, soft_bellman_target

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from bench_update import straightforward_loss  # noqa: E402  (the benchmark's reference (2))

ALPHA = 0.3


def randomised_policy(obs_dim, act_dim, scale=0.1, seed=0, sigma_max=-0.3, sigma_min=-1.5):
    torch.manual_seed(seed)
    policy = FlowPolicy(obs_dim, act_dim, ALPHA, sigma_max, sigma_min)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(scale * torch.randn_like(p))
    return policy.eval()


def midpoint_grid(n, dim, low=-1.0, high=1.0):
    g = low + (torch.arange(n, dtype=torch.float64) + 0.5) * (high - low) / n
    return (g[:, None] if dim == 1 else torch.cartesian_prod(g, g)), ((high - low) / n) ** dim


@pytest.mark.parametrize("act_dim,n", [(1, 4000), (2, 600)])
def test_density_integrates_to_one_over_the_action_box(act_dim, n):
    policy = randomised_policy(4, act_dim).double()
    grid, cell = midpoint_grid(n, act_dim)
    for obs in torch.randn(2, 4, dtype=torch.float64):
        with torch.no_grad():
            mass = policy.log_prob(obs.expand(len(grid), 4), grid).exp().sum().item() * cell
        assert abs(mass - 1.0) < 0.02, mass


def test_density_of_a_strongly_randomised_flow_integrates_to_one_in_latent_space():
    # larger weights push mass against the box edges, where an action grid is too coarse:
    # integrate the same density after the substitution a = tanh(u), da = prod(1 - tanh(u)^2) du
    policy = randomised_policy(4, 2, scale=0.3).double()
    u, cell = midpoint_grid(600, 2, -7.0, 7.0)
    a = torch.tanh(u)
    obs = torch.randn(1, 4, dtype=torch.float64).expand(len(u), 4)
    with torch.no_grad():
        log_density = policy.log_prob(obs, a) + torch.log1p(-a.pow(2)).sum(-1)
    assert abs(log_density.exp().sum().item() * cell - 1.0) < 0.02


def test_q_minus_v_is_alpha_log_pi_per_column():
    policy = randomised_policy(6, 3, scale=0.3)
    obs, actions = torch.randn(128, 6), torch.rand(128, 3) * 1.9 - 0.95
    with torch.no_grad():
        q, v = policy.q_and_v(obs, actions)
        log_prob = policy.log_prob(obs, actions)
    assert q.shape == v.shape == (128, 2)
    for k in range(2):
        assert torch.allclose(q[:, k] - v[:, k], ALPHA * log_prob, atol=1e-4)
    assert not torch.allclose(q[:, 0], q[:, 1])  # two different reward shifts


def test_value_is_the_soft_value_of_q():
    # V(s) = alpha * log integral exp(Q(s, a) / alpha) da, checked by quadrature for act_dim 1
    policy = randomised_policy(4, 1).double()
    grid, cell = midpoint_grid(4000, 1)
    obs = torch.randn(1, 4, dtype=torch.float64)
    with torch.no_grad():
        q, _ = policy.q_and_v(obs.expand(len(grid), 4), grid)
        v_quadrature = ALPHA * torch.logsumexp(q / ALPHA + math.log(cell), dim=0)
        v = policy.value(obs)[0]
    assert torch.allclose(v, v_quadrature, atol=1e-3)
    assert torch.allclose(policy.q_and_v(obs, grid[:1])[1][0], v)


def test_reward_shift_changes_q_and_v_but_not_the_policy():
    policy = randomised_policy(5, 2, scale=0.3)
    obs, actions = torch.randn(64, 5), torch.rand(64, 2) * 1.8 - 0.9
    with torch.no_grad():
        q0, v0 = policy.q_and_v(obs, actions)
        lp0 = policy.log_prob(obs, actions)
        torch.manual_seed(1)
        a0, s_lp0 = policy.sample(obs)
        for p in policy.reward_shift.parameters():
            p.add_(torch.randn_like(p))
        q1, v1 = policy.q_and_v(obs, actions)
        torch.manual_seed(1)
        a1, s_lp1 = policy.sample(obs)
    assert (q1 - q0).abs().min() > 1e-4 and (v1 - v0).abs().min() > 1e-4
    assert torch.allclose(q1 - v1, q0 - v0, rtol=1e-4, atol=1e-3)
    assert torch.allclose(policy.log_prob(obs, actions), lp0)
    assert torch.equal(a0, a1) and torch.equal(s_lp0, s_lp1)


def test_deterministic_action_is_the_prior_mean_pushed_through_the_flow():
    policy = randomised_policy(5, 3, scale=0.3)
    obs = torch.randn(16, 5)
    with torch.no_grad():
        actions, _ = policy.sample(obs, deterministic=True)
        z, _ = policy.prior(torch.zeros(16, 3), obs)  # the prior mean is 0 in every state
        assert torch.equal(z, torch.zeros(16, 3))
        for coupling in policy.couplings:
            z = z + coupling.unmasked * coupling.shift_net(torch.cat([coupling.mask * z, obs], -1))
        expected = torch.tanh(z)
    assert torch.allclose(actions, expected, atol=1e-6)
    assert (actions.abs() > 1e-3).all()  # the couplings moved it away from 0


def test_samples_lie_in_the_box_and_carry_their_log_prob():
    policy = randomised_policy(5, 4, scale=0.3)
    obs = torch.randn(2048, 5)
    with torch.no_grad():
        actions, log_prob = policy.sample(obs)
        recomputed = policy.log_prob(obs, actions)
    assert (actions.abs() < 1).all()
    assert actions.std(0).min() > 0.05  # stochastic
    close = torch.isclose(log_prob, recomputed, atol=1e-3, rtol=1e-4)
    assert close.float().mean() > 0.999  # float32 saturation of tanh may spoil a rare sample


def test_soft_bellman_target_bootstraps_time_outs_not_terminations():
    target = randomised_policy(3, 2, scale=0.3)
    next_obs = torch.randn(4, 3)
    rewards = torch.tensor([1.0, 1.0, -2.0, 0.5])
    terminated = torch.tensor([0.0, 1.0, 0.0, 1.0])  # a time-out is stored as terminated = 0
    y = soft_bellman_target(target, rewards, next_obs, terminated, gamma=0.9)
    min_v = target.value(next_obs).min(dim=1).values
    assert torch.allclose(y[[0, 2]], rewards[[0, 2]] + 0.9 * min_v[[0, 2]])
    assert torch.equal(y[[1, 3]], rewards[[1, 3]])
    assert (min_v[[0, 2]].abs() > 1e-3).all()


def test_fused_loss_equals_the_straightforward_reference():
    policy, target = randomised_policy(7, 3, scale=0.3, seed=0), randomised_policy(7, 3, scale=0.3, seed=1)
    gen = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(64, 7, generator=gen), torch.rand(64, 3, generator=gen) * 1.8 - 0.9,
                  torch.randn(64, generator=gen), torch.randn(64, 7, generator=gen), (torch.rand(64, generator=gen) < 0.3).float())
    loss = meow_loss(policy, target, batch, 0.99)
    ref, q1, q2 = straightforward_loss(policy, target, batch, 0.99)
    q, _ = policy.q_and_v(batch.obs, batch.actions)
    assert torch.allclose(q[:, 0], q1, atol=1e-5) and torch.allclose(q[:, 1], q2, atol=1e-5)
    assert torch.allclose(loss, ref, rtol=1e-5)
    grads = torch.autograd.grad(loss, list(policy.parameters()), allow_unused=True)
    ref_grads = torch.autograd.grad(ref, list(policy.parameters()), allow_unused=True)
    for g, r in zip(grads, ref_grads):
        assert (g is None and r is None) or torch.allclose(g, r, atol=1e-5)


def test_update_lowers_the_loss_and_moves_the_target_by_tau():
    torch.manual_seed(0)
    policy = FlowPolicy(4, 2, ALPHA, -0.3, -5.0)
    target = FlowPolicy(4, 2, ALPHA, -0.3, -5.0).eval()
    target.load_state_dict(policy.state_dict())
    target.requires_grad_(False)
    update = make_update(policy, target, make_optimizer(policy, 1e-3), 0.99, 0.01, 30.0)
    batch = Batch(torch.randn(128, 4), torch.rand(128, 2) * 2 - 1, torch.randn(128), torch.randn(128, 4), torch.zeros(128))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    online_before = {k: v.clone() for k, v in policy.state_dict().items()}
    first = update(batch)
    key = "couplings.0.shift_net.net.0.weight"
    expected = 0.99 * before[key] + 0.01 * policy.state_dict()[key]
    assert torch.allclose(target.state_dict()[key], expected, atol=1e-6)
    assert not torch.equal(policy.state_dict()[key], online_before[key])
    for _ in range(200):
        last = update(batch)
    assert last.item() < 0.5 * first.item()
