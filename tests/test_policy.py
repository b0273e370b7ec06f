"""The MEow network: a normalised policy, Q - V = alpha * log pi, exact V, and the fused loss.

Both scripts hold the algorithm; the tests of its maths run on each copy (the `meow` fixture), and
test_the_two_scripts_hold_the_same_algorithm keeps the copies identical.
"""
import math
import os
import sys

import pytest
import torch

import meow_continuous_action
import meow_isaacgym

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from bench_update import straightforward_loss  # noqa: E402  (the benchmark's reference (2))

ALPHA = 0.3
SCRIPTS = [meow_continuous_action, meow_isaacgym]


@pytest.fixture(params=SCRIPTS, ids=lambda m: m.__name__)
def meow(request):
    """Each script's own copy of the algorithm."""
    return request.param


def randomised_policy(meow, obs_dim, act_dim, scale=0.1, seed=0, sigma_max=-0.3, sigma_min=-1.5):
    torch.manual_seed(seed)
    policy = meow.FlowPolicy(obs_dim, act_dim, ALPHA, sigma_max, sigma_min)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(scale * torch.randn_like(p))
    return policy.eval()


def midpoint_grid(n, dim, low=-1.0, high=1.0):
    g = low + (torch.arange(n, dtype=torch.float64) + 0.5) * (high - low) / n
    return (g[:, None] if dim == 1 else torch.cartesian_prod(g, g)), ((high - low) / n) ** dim


@pytest.mark.parametrize("act_dim,n", [(1, 4000), (2, 600)])
def test_density_integrates_to_one_over_the_action_box(act_dim, n):
    meow = meow_continuous_action  # ~20 s: one copy (the copies are identical, tested below)
    policy = randomised_policy(meow, 4, act_dim).double()
    grid, cell = midpoint_grid(n, act_dim)
    for obs in torch.randn(2, 4, dtype=torch.float64):
        with torch.no_grad():
            mass = policy.log_prob(obs.expand(len(grid), 4), grid).exp().sum().item() * cell
        assert abs(mass - 1.0) < 0.02, mass


def test_density_of_a_strongly_randomised_flow_integrates_to_one_in_latent_space():
    meow = meow_continuous_action  # ~10 s: one copy
    # larger weights push mass against the box edges, where an action grid is too coarse:
    # integrate the same density after the substitution a = tanh(u), da = prod(1 - tanh(u)^2) du
    policy = randomised_policy(meow, 4, 2, scale=0.3).double()
    u, cell = midpoint_grid(600, 2, -7.0, 7.0)
    a = torch.tanh(u)
    obs = torch.randn(1, 4, dtype=torch.float64).expand(len(u), 4)
    with torch.no_grad():
        log_density = policy.log_prob(obs, a) + torch.log1p(-a.pow(2)).sum(-1)
    assert abs(log_density.exp().sum().item() * cell - 1.0) < 0.02


def test_q_minus_v_is_alpha_log_pi_per_column(meow):
    policy = randomised_policy(meow, 6, 3, scale=0.3)
    obs, actions = torch.randn(128, 6), torch.rand(128, 3) * 1.9 - 0.95
    with torch.no_grad():
        q, v = policy.q_and_v(obs, actions)
        log_prob = policy.log_prob(obs, actions)
    assert q.shape == v.shape == (128, 2)
    for k in range(2):
        assert torch.allclose(q[:, k] - v[:, k], ALPHA * log_prob, atol=1e-4)
    assert not torch.allclose(q[:, 0], q[:, 1])  # two different reward shifts


def test_value_is_the_soft_value_of_q(meow):
    # V(s) = alpha * log integral exp(Q(s, a) / alpha) da, checked by quadrature for act_dim 1
    policy = randomised_policy(meow, 4, 1).double()
    grid, cell = midpoint_grid(4000, 1)
    obs = torch.randn(1, 4, dtype=torch.float64)
    with torch.no_grad():
        q, _ = policy.q_and_v(obs.expand(len(grid), 4), grid)
        v_quadrature = ALPHA * torch.logsumexp(q / ALPHA + math.log(cell), dim=0)
        v = policy.value(obs)[0]
    assert torch.allclose(v, v_quadrature, atol=1e-3)
    assert torch.allclose(policy.q_and_v(obs, grid[:1])[1][0], v)


def test_reward_shift_changes_q_and_v_but_not_the_policy(meow):
    policy = randomised_policy(meow, 5, 2, scale=0.3)
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


def test_deterministic_action_is_the_prior_mean_pushed_through_the_flow(meow):
    policy = randomised_policy(meow, 5, 3, scale=0.3)
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


def test_samples_lie_in_the_box_and_carry_their_log_prob(meow):
    policy = randomised_policy(meow, 5, 4, scale=0.3)
    obs = torch.randn(2048, 5)
    with torch.no_grad():
        actions, log_prob = policy.sample(obs)
        recomputed = policy.log_prob(obs, actions)
    assert (actions.abs() < 1).all()
    assert actions.std(0).min() > 0.05  # stochastic
    close = torch.isclose(log_prob, recomputed, atol=1e-3, rtol=1e-4)
    assert close.float().mean() > 0.999  # float32 saturation of tanh may spoil a rare sample


def test_soft_bellman_target_bootstraps_time_outs_not_terminations(meow):
    target = randomised_policy(meow, 3, 2, scale=0.3)
    next_obs = torch.randn(4, 3)
    rewards = torch.tensor([1.0, 1.0, -2.0, 0.5])
    terminated = torch.tensor([0.0, 1.0, 0.0, 1.0])  # a time-out is stored as terminated = 0
    y = meow.soft_bellman_target(target, rewards, next_obs, terminated, gamma=0.9)
    min_v = target.value(next_obs).min(dim=1).values
    assert torch.allclose(y[[0, 2]], rewards[[0, 2]] + 0.9 * min_v[[0, 2]])
    assert torch.equal(y[[1, 3]], rewards[[1, 3]])
    assert (min_v[[0, 2]].abs() > 1e-3).all()


def test_fused_loss_equals_the_straightforward_reference(meow):
    policy, target = randomised_policy(meow, 7, 3, scale=0.3, seed=0), randomised_policy(meow, 7, 3, scale=0.3, seed=1)
    gen = torch.Generator().manual_seed(0)
    batch = meow.Batch(torch.randn(64, 7, generator=gen), torch.rand(64, 3, generator=gen) * 1.8 - 0.9,
                  torch.randn(64, generator=gen), torch.randn(64, 7, generator=gen), (torch.rand(64, generator=gen) < 0.3).float())
    loss = meow.meow_loss(policy, target, batch, 0.99)
    ref, q1, q2 = straightforward_loss(policy, target, batch, 0.99)
    q, _ = policy.q_and_v(batch.obs, batch.actions)
    assert torch.allclose(q[:, 0], q1, atol=1e-5) and torch.allclose(q[:, 1], q2, atol=1e-5)
    assert torch.allclose(loss, ref, rtol=1e-5)
    # the target's V(s') without any coupling layer = V read off its whole flow, Q - alpha * log pi
    some_actions = torch.rand(64, 3, generator=gen) * 1.8 - 0.9
    with torch.no_grad():
        q_t, v_t = target.q_and_v(batch.next_obs, some_actions)
        v_through_flow = q_t - ALPHA * target.log_prob(batch.next_obs, some_actions)[:, None]
    assert torch.allclose(target.value(batch.next_obs), v_through_flow, atol=1e-4)
    assert torch.allclose(v_t, target.value(batch.next_obs), atol=1e-5)
    grads = torch.autograd.grad(loss, list(policy.parameters()), allow_unused=True)
    ref_grads = torch.autograd.grad(ref, list(policy.parameters()), allow_unused=True)
    for g, r in zip(grads, ref_grads):
        assert (g is None and r is None) or torch.allclose(g, r, atol=1e-5)


def test_fused_loss_with_dropout_equals_the_reference_with_the_same_masks(meow):
    """The two passes on a leading axis of 2 (masks [2, B, H], the observation's part computed once) give
    the loss and gradients of the authors' doubled batch with the same masks as its [2B, H] rows."""
    policy, target = randomised_policy(meow, 7, 3, scale=0.3, seed=0), randomised_policy(meow, 7, 3, scale=0.3, seed=1)
    gen = torch.Generator().manual_seed(1)
    batch = meow.Batch(torch.randn(64, 7, generator=gen), torch.rand(64, 3, generator=gen) * 1.8 - 0.9,
                       torch.randn(64, generator=gen), torch.randn(64, 7, generator=gen), (torch.rand(64, generator=gen) < 0.3).float())
    policy.use_dropout(True)
    torch.manual_seed(5)
    with policy.dropout_masks(2, 64):
        loss = meow.meow_loss(policy, target, batch, 0.99)
    torch.manual_seed(5)
    with policy.dropout_masks(128):
        ref, _, _ = straightforward_loss(policy, target, batch, 0.99)
    policy.use_dropout(False)
    assert not torch.allclose(loss, meow.meow_loss(policy, target, batch, 0.99), rtol=1e-3)  # the masks were applied
    assert torch.allclose(loss, ref, rtol=1e-5)
    grads = torch.autograd.grad(loss, list(policy.parameters()), allow_unused=True)
    ref_grads = torch.autograd.grad(ref, list(policy.parameters()), allow_unused=True)
    for g, r in zip(grads, ref_grads):
        assert (g is None and r is None) or torch.allclose(g, r, atol=1e-5)


def test_update_lowers_the_loss_and_moves_the_target_by_tau(meow):
    torch.manual_seed(0)
    policy = meow.FlowPolicy(4, 2, ALPHA, -0.3, -5.0)
    target = meow.FlowPolicy(4, 2, ALPHA, -0.3, -5.0).eval()
    target.load_state_dict(policy.state_dict())
    target.requires_grad_(False)
    update, _ = meow.make_update(policy, target, 1e-3, 0.99, 0.01, 30.0)
    batch = meow.Batch(torch.randn(128, 4), torch.rand(128, 2) * 2 - 1, torch.randn(128), torch.randn(128, 4), torch.zeros(128))
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


def policy_pair(meow, seed=0, obs_dim=4, act_dim=2):
    torch.manual_seed(seed)
    policy = meow.FlowPolicy(obs_dim, act_dim, ALPHA, -0.3, -5.0)
    target = meow.FlowPolicy(obs_dim, act_dim, ALPHA, -0.3, -5.0).eval()
    target.load_state_dict(policy.state_dict())
    target.requires_grad_(False)
    return policy, target


def test_flattened_parameters_and_gradients_are_views_of_one_buffer(meow):
    policy, _ = policy_pair(meow)
    policy.use_dropout(False)
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    obs, actions = torch.randn(16, 4), torch.rand(16, 2) * 2 - 1
    q_before = policy.q_and_v(obs, actions)[0].detach()
    flat = meow.flatten_parameters(policy)
    assert flat.numel() == sum(p.numel() for p in policy.parameters())
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in state.items())  # same values, new home
    assert torch.equal(policy.q_and_v(obs, actions)[0].detach(), q_before)
    policy.q_and_v(obs, actions)[0].sum().backward()
    assert torch.equal(flat.grad, torch.cat([p.grad.reshape(-1) for p in policy.parameters()]))
    assert flat.grad.abs().sum() > 0
    with torch.no_grad():
        flat.add_(1.0)  # writing the buffer writes every parameter
    assert all(torch.equal(p, state[k] + 1.0) for k, p in policy.named_parameters())


def test_flat_update_takes_the_same_steps_as_a_per_tensor_update(meow):
    """Adam, the clip and Polyak over one flat buffer are the per-tensor arithmetic, done at once."""
    batch = meow.Batch(torch.randn(64, 4), torch.rand(64, 2) * 2 - 1, torch.randn(64), torch.randn(64, 4), (torch.rand(64) < 0.2).float())
    policy, target = policy_pair(meow)
    update, _ = meow.make_update(policy, target, 1e-3, 0.99, 0.01, max_grad_norm=0.5)  # small clip: it binds
    ref_policy, ref_target = policy_pair(meow)
    params, target_params = list(ref_policy.parameters()), list(ref_target.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3, foreach=False)
    for step in range(5):
        torch.manual_seed(100 + step)  # the same dropout masks on both sides
        loss = update(batch)
        torch.manual_seed(100 + step)
        ref_policy.use_dropout(True)
        with ref_policy.dropout_masks(2, 64):
            ref_loss = meow.meow_loss(ref_policy, ref_target, batch, 0.99)
        optimizer.zero_grad()
        ref_loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        optimizer.step()
        with torch.no_grad():
            for t, p in zip(target_params, params):
                t.mul_(0.99).add_(0.01 * p)
        assert torch.allclose(loss, ref_loss.detach(), rtol=1e-5)
    for (name, p), ref in zip(policy.named_parameters(), params):
        assert torch.allclose(p, ref, atol=1e-6), name
    for (name, t), ref in zip(target.named_parameters(), target_params):
        assert torch.allclose(t, ref, atol=1e-6), name


def test_compile_that_fails_at_the_first_call_falls_back_with_one_warning(meow, monkeypatch, capsys):
    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("no C++ compiler found\nlong traceback")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    fn = meow.maybe_compile(lambda x: 2 * x, True, "cpu", "the doubling")
    assert fn(3) == 6 and fn(4) == 8
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == ["warning: torch.compile failed (no C++ compiler found); running the doubling eagerly"]
    (line,) = captured.out.strip().splitlines()  # said once, before the (failed) compilation
    assert line.startswith("compiling the doubling (once per process") and "--no-compile" in line


def test_dropout_masks_are_drawn_once_used_by_every_layer_and_cleared(meow):
    policy, _ = policy_pair(meow)
    policy.use_dropout(True)
    obs, actions = torch.randn(32, 4), torch.rand(32, 2) * 2 - 1
    with policy.dropout_masks(2, 32):  # one set per Q column
        masks = [layer.mask for layer in policy._dropouts]
        q1 = policy.q_and_v(obs, actions)[0]
        q2 = policy.q_and_v(obs, actions)[0]
    assert len(masks) == 8 and all(m.shape == (2, 32, 64) for m in masks)
    all_masks = torch.stack(masks)
    assert torch.allclose(all_masks.unique(), torch.tensor([0.0, 1 / 0.9]))  # dropped, or kept and rescaled
    assert abs((all_masks == 0).float().mean().item() - 0.1) < 4 * (0.1 * 0.9 / all_masks.numel()) ** 0.5
    assert not torch.equal(masks[0], masks[1])  # one independent mask per layer
    assert torch.equal(q1, q2)  # the same masks in both passes
    assert all(layer.mask is None for layer in policy._dropouts)
    q3 = policy.q_and_v(obs, actions)[0]  # outside the block each layer draws its own mask
    assert not torch.equal(q3, q1)


def test_compiled_loss_equals_the_eager_loss_with_fresh_masks_each_call(capsys):
    """torch.compile must read the dropout masks as inputs of the compiled loss, not bake in the first ones."""
    pytest.importorskip("torch._inductor")
    meow = meow_continuous_action  # compiling takes ~20 s: one copy (the copies are identical, tested below)
    policy, target = policy_pair(meow, seed=3)
    policy.use_dropout(True)
    compiled = meow.maybe_compile(meow.meow_loss, True, "cpu", "the loss")
    gen = torch.Generator().manual_seed(0)
    batch = meow.Batch(torch.randn(32, 4, generator=gen), torch.rand(32, 2, generator=gen) * 2 - 1, torch.randn(32, generator=gen),
                  torch.randn(32, 4, generator=gen), (torch.rand(32, generator=gen) < 0.2).float())
    losses = []
    for seed in (10, 11):  # the same batch, new masks
        torch.manual_seed(seed)
        with policy.dropout_masks(2, 32):
            eager = meow.meow_loss(policy, target, batch, 0.99)
            fast = compiled(policy, target, batch, 0.99)
        assert torch.allclose(fast, eager, rtol=1e-5, atol=1e-6)
        losses.append(eager)
    assert not torch.allclose(losses[0], losses[1])  # so the second call would have caught stale masks
    assert "eagerly" not in capsys.readouterr().err  # it really ran compiled


# ----------------------------------------------------------------------------- the two copies
SHARED = ["FlowPolicy", "soft_bellman_target", "meow_loss", "make_update", "diagnostics"]
# the support block both scripts copy (between its banners), every function and constant of it
SUPPORT = ["ConfigError", "fail", "validate_algorithm_args", "flatten_parameters", "make_optimizer", "MAX_DEFAULT_THREADS", "COMPILE_MIN_UPDATES", "default_threads", "seed_everything",
           "compile_enabled", "maybe_compile", "make_writer", "close_writer", "read_and_check", "stop_on_bad_input", "RecentRate", "format_eta", "shown", "rng_state",
           "VALUE_BIAS_BOUND", "VALUE_BIAS_LOG_POINTS", "ValueBias", "set_rng_state", "save_checkpoint", "StopSignal", "load_checkpoint", "check_resumable",
           "saved_args", "resumed_args"]


def banner_block(path, start, end):
    text = open(path).read()
    i = text.index(start)
    return text[text.index("\n", i) : text.index(end, i)]


def test_the_two_scripts_hold_the_same_support_block():
    start, end = "# " + "-" * 64 + " shared support", "# " + "-" * 64 + " end of the shared support"
    blocks = [banner_block(script.__file__, start, end) for script in SCRIPTS]
    assert blocks[0] == blocks[1]
    import ast

    names = set()
    for node in ast.parse(blocks[0]).body:
        names.update([node.name] if hasattr(node, "name") else [t.id for t in getattr(node, "targets", [])])
    assert names == set(SUPPORT)  # the list names the whole block


def test_the_two_scripts_hold_the_same_algorithm():
    """The copy CleanRL accepts on purpose must not drift: the same source text, and the same numbers."""
    import inspect

    for name in SHARED:
        assert inspect.getsource(getattr(meow_continuous_action, name)) == inspect.getsource(getattr(meow_isaacgym, name)), name
    gen = torch.Generator().manual_seed(0)
    batch = meow_continuous_action.Batch(torch.randn(32, 5, generator=gen), torch.rand(32, 3, generator=gen) * 1.8 - 0.9,
                                         torch.randn(32, generator=gen), torch.randn(32, 5, generator=gen), (torch.rand(32, generator=gen) < 0.3).float())
    results = []
    for script in SCRIPTS:
        policy, target = policy_pair(script, seed=4, obs_dim=5, act_dim=3)
        with torch.no_grad():
            for p in target.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        policy.use_dropout(True)
        torch.manual_seed(7)
        with policy.dropout_masks(2, 32):
            loss = script.meow_loss(policy, target, batch, 0.99)
        grads = torch.autograd.grad(loss, list(policy.parameters()))
        policy.use_dropout(False)
        q, v = policy.q_and_v(batch.obs, batch.actions)
        results.append([loss, q, v, policy.log_prob(batch.obs, batch.actions), *grads])
    assert len(results[0]) == len(results[1])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_each_q_column_takes_its_own_pass_and_dropout_masks():
    """As in the authors' code: with dropout the two columns' energies differ (own masks); without it
    they are one energy, and Q - V = alpha * log pi in each column."""
    meow = meow_continuous_action
    torch.manual_seed(0)
    policy = meow.FlowPolicy(5, 3, ALPHA, -0.3, -5.0)
    with torch.no_grad():
        for p in policy.reward_shift.parameters():  # nonzero shifts, so that the columns differ by them
            p.normal_()
    obs, actions = torch.randn(16, 5), torch.rand(16, 3) * 1.8 - 0.9
    shift = ALPHA * policy.reward_shift(obs)
    q, v = policy.q_and_v(obs, actions)
    assert torch.allclose(q - v, ALPHA * policy.log_prob(obs, actions)[:, None].expand_as(q), atol=1e-3)
    assert torch.allclose((q - shift)[:, 0], (q - shift)[:, 1], atol=1e-4)
    policy.use_dropout(True)
    with policy.dropout_masks(2, 16):
        masks = [layer.mask for layer in policy._dropouts]
        q, v = policy.q_and_v(obs, actions)
    assert not any(torch.equal(m[0], m[1]) for m in masks)  # the two passes of each mask are drawn apart
    energy = q - shift
    assert not torch.allclose(energy[:, 0], energy[:, 1], atol=1e-4)
    assert torch.allclose(v - shift, (v - shift)[:, :1].expand_as(v), atol=1e-4)  # log Z: no dropout in the prior
