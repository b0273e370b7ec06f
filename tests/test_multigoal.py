"""Tests of examples/multigoal.py: the task, the figure and tiny end-to-end runs (MEow and the Gaussian baseline)."""
import importlib.util
import os
import re
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "multigoal.py")

# examples/ is not a package: load the script as a module (its __main__ block does not run)
_spec = importlib.util.spec_from_file_location("multigoal", SCRIPT)
mg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mg)

GOALS = [(5.0, 0.0), (0.0, 5.0), (-5.0, 0.0), (0.0, -5.0)]


def tiny_args(tmp_path, **overrides):
    """A budget of seconds: enough to run every code path, not to learn the task."""
    kw = dict(seeds=(3,), total_timesteps=260, learning_starts=200, batch_size=32, eval_rollouts=6, figure=str(tmp_path / "fig.png"))
    kw.update(overrides)
    return mg.Args(**kw)


def test_goals_sit_symmetrically_around_the_start():
    env = mg.MultiGoalEnv(goal_distance=5.0)
    np.testing.assert_allclose(env.goals, GOALS)
    obs, _ = env.reset(seed=0)
    assert np.linalg.norm(obs) < 0.5  # near the origin (init_noise 0.1)
    obs, _ = env.reset(options={"pos": (0.0, 0.0)})
    np.testing.assert_array_equal(obs, [0.0, 0.0])


@pytest.mark.parametrize("goal", range(4))
def test_reaching_each_goal_terminates_with_the_bonus(goal):
    env = mg.MultiGoalEnv(goal_radius=1.0, goal_bonus=10.0, action_cost=30.0, distance_cost=1.0)
    g = np.array(GOALS[goal])
    direction = g / np.linalg.norm(g)
    env.reset(options={"pos": g - 1.5 * direction})  # 1.5 from the goal: a step of 0.8 lands 0.7 away
    obs, reward, terminated, truncated, info = env.step(0.8 * direction)
    np.testing.assert_allclose(obs, g - 0.7 * direction, atol=1e-6)
    assert terminated and not truncated
    assert info["goal"] == goal
    assert reward == pytest.approx(-30.0 * 0.64 - 0.7 ** 2 + 10.0)


@pytest.mark.parametrize("goal", range(4))
def test_a_step_short_of_the_goal_neither_terminates_nor_pays_the_bonus(goal):
    env = mg.MultiGoalEnv(goal_radius=1.0, goal_bonus=10.0, action_cost=30.0, distance_cost=1.0)
    g = np.array(GOALS[goal])
    direction = g / np.linalg.norm(g)
    env.reset(options={"pos": g - 1.5 * direction})
    obs, reward, terminated, _, info = env.step(0.4 * direction)  # lands 1.1 away: just outside
    assert not terminated and info["goal"] == -1
    assert reward == pytest.approx(-30.0 * 0.16 - 1.1 ** 2)


def test_actions_are_clipped_to_the_box_and_cost_their_square():
    env = mg.MultiGoalEnv(action_cost=30.0, distance_cost=1.0)
    env.reset(options={"pos": (0.0, 0.0)})
    obs, reward, _, _, _ = env.step(np.array([3.0, -0.5]))
    np.testing.assert_allclose(obs, [1.0, -0.5], atol=1e-6)
    assert reward == pytest.approx(-30.0 * 1.25 - (4.0 ** 2 + 0.5 ** 2))


def test_cost_is_minimal_at_the_goals():
    env = mg.MultiGoalEnv(distance_cost=1.0)
    np.testing.assert_allclose(env.cost(np.array(GOALS)), 0.0, atol=1e-12)
    assert env.cost([0.0, 0.0]) == pytest.approx(25.0)
    assert env.cost([1.0, 1.0]) == pytest.approx(17.0)  # nearest goal (5, 0) or (0, 5): 4^2 + 1^2
    xs = np.linspace(-7, 7, 141)  # step 0.1: the goals are grid points
    grid = np.stack(np.meshgrid(xs, xs), axis=-1).reshape(-1, 2)
    cost = env.cost(grid)
    at_goal = np.isclose(cost, 0.0, atol=1e-9)
    np.testing.assert_allclose(np.sort(grid[at_goal], axis=0), np.sort(np.array(GOALS), axis=0), atol=1e-9)
    assert cost[~at_goal].min() == pytest.approx(0.01)  # the grid neighbours of a goal, 0.1 away
    # local minima of the grid cost are exactly the goals (each cell compared with its 4 neighbours)
    c = cost.reshape(len(xs), len(xs))
    inner = c[1:-1, 1:-1]
    is_min = (inner < c[:-2, 1:-1]) & (inner < c[2:, 1:-1]) & (inner < c[1:-1, :-2]) & (inner < c[1:-1, 2:])
    assert is_min.sum() == 4


def test_time_limit_truncates_without_terminating(tmp_path):
    env = mg.make_env(tiny_args(tmp_path, max_episode_steps=7), seed=0)
    env.reset(options={"pos": (0.0, 0.0)})
    for t in range(7):
        _, reward, terminated, truncated, _ = env.step(np.zeros(2))
        assert not terminated
        assert reward == pytest.approx(-25.0)
    assert truncated and t == 6


def test_goal_report_counts_goals_shares_and_misses():
    line = mg.goal_report(np.array([0, 0, 2, -1, 0, 2, -1, 0]), np.array(GOALS))
    assert line.startswith("reached 2/4 goals in 8 rollouts")
    assert "(+5, +0) 50%" in line and "(+0, +5) 0%" in line and "(-5, +0) 25%" in line
    assert "none 25% (rollouts 3, 6)" in line


def test_gaussian_log_prob_matches_the_tanh_change_of_variables():
    torch.manual_seed(0)
    agent = mg.GaussianSAC(2, 2, alpha=0.5)
    obs = torch.randn(64, 2)
    actions, log_prob = agent.sample(obs)
    mean, log_std = agent.actor(obs).chunk(2, dim=-1)
    base = torch.distributions.Normal(mean, log_std.clamp(-5, 2).exp())
    expected = base.log_prob(torch.atanh(actions)).sum(-1) - torch.log1p(-actions.pow(2)).sum(-1)
    torch.testing.assert_close(log_prob, expected, rtol=1e-3, atol=1e-3)


def test_meow_soft_q_is_the_policy_log_density_plus_the_value():
    """The right panel's claim: for MEow, Q(s0, .) is alpha * log pi(.|s0) shifted by V(s0)."""
    torch.manual_seed(0)
    agent = mg.meow_continuous_action.FlowPolicy(2, 2, 0.5, 0.0, -5.0).eval()
    with torch.no_grad():  # make the shifts and the prior state-dependent and non-trivial
        for p in agent.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs, actions = torch.zeros(50, 2), torch.rand(50, 2) * 1.8 - 0.9
    with torch.no_grad():
        expected = 0.5 * agent.log_prob(obs, actions) + agent.value(obs).min(dim=1).values
    torch.testing.assert_close(mg.soft_q(agent, obs, actions), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["meow", "gaussian"])
def test_figure_renders_headless(tmp_path, kind):
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"
    torch.manual_seed(0)
    agent = mg.meow_continuous_action.FlowPolicy(2, 2, 0.5, 0.0, -5.0) if kind == "meow" else mg.GaussianSAC(2, 2, 0.5)
    paths = [np.array([[0, 0], [1, 0], [4.5, 0]]), np.array([[0, 0], [0, -1], [0.2, -2]])]
    path = tmp_path / "sub" / "fig.png"  # the directory is created
    mg.draw_figure(agent, tiny_args(tmp_path), paths, np.array([0, -1]), kind, str(path))
    image = matplotlib.image.imread(str(path))
    assert image.shape[0] == 500 and image.shape[1] == 1100  # 11 x 5 inches at 100 dpi
    assert image[..., :3].std() > 0.05  # not a blank canvas


def parse_goals(out):
    found = re.findall(r"seed (\d+): reached (\d)/4 goals in (\d+) rollouts", out)
    assert found, out
    return [(int(s), int(n), int(r)) for s, n, r in found]


def test_tiny_meow_run_writes_png_and_reports_goals(tmp_path, capsys):
    args = tiny_args(tmp_path)
    mg.main(args)
    out = capsys.readouterr().out
    ((seed, n_goals, n_rollouts),) = parse_goals(out)
    assert seed == 3 and n_rollouts == 6 and 0 <= n_goals <= 4
    assert out.count("MEow seed 3") == 1
    assert os.path.getsize(args.figure) > 10_000
    with open(args.figure, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_tiny_gaussian_run_from_the_command_line_elsewhere(tmp_path):
    """Runs as a script from another directory, several seeds, the baseline."""
    figure = tmp_path / "gauss.png"
    cmd = [sys.executable, SCRIPT, "--baseline", "gaussian", "--seeds", "4", "5", "--total-timesteps", "260",
           "--learning-starts", "200", "--batch-size", "32", "--eval-rollouts", "5", "--figure", str(figure)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    per_seed, summary = proc.stdout.split("summary:")
    assert [(s, r) for s, _, r in parse_goals(per_seed)] == [(4, 5), (5, 5)]
    assert parse_goals(summary) == parse_goals(per_seed)
    assert "Gaussian SAC seed 4" in per_seed
    assert figure.exists() and os.path.getsize(figure) > 10_000
    assert not (tmp_path / "docs").exists()  # an explicit --figure writes nowhere else


def test_training_is_reproducible_per_seed(tmp_path):
    args = tiny_args(tmp_path, total_timesteps=230)
    states = []
    for _ in range(2):
        agent = mg.train(args, seed=7)
        states.append(torch.cat([p.detach().flatten() for p in agent.parameters()]))
    torch.testing.assert_close(states[0], states[1], rtol=0, atol=0)


def test_bad_settings_fail_early_without_writing(tmp_path):
    with pytest.raises(SystemExit, match="sigma-min"):
        mg.main(tiny_args(tmp_path, sigma_min=2.0))
    with pytest.raises(SystemExit, match="at least one seed"):
        mg.main(tiny_args(tmp_path, seeds=()))
    assert not os.path.exists(tmp_path / "fig.png")


# ---------------------------------------------------------------- the exact soft-optimal policy
sys.path.insert(0, os.path.join(ROOT, "examples"))  # multigoal_modes imports its two neighbours by name
import multigoal_modes as mm  # noqa: E402
import soft_optimal as so  # noqa: E402

MODES_SCRIPT = os.path.join(ROOT, "examples", "multigoal_modes.py")


@pytest.fixture(scope="module")
def small_solution():
    """The example's task, alpha and gamma, on a grid of step 1/4 (half a second)."""
    return so.soft_value_iteration(mg.MultiGoalEnv(), alpha=2.5, gamma=0.9, cells_per_unit=4)


def test_vectorised_transition_matches_the_env_step():
    env = mg.MultiGoalEnv()
    rng = np.random.default_rng(0)
    pos, actions = rng.uniform(-7, 7, (200, 2)), rng.uniform(-1.3, 1.3, (200, 2))
    pos[:50] = np.array(GOALS)[rng.integers(0, 4, 50)] * 0.85  # near the goals, so that some steps terminate
    next_pos, reward, done = so.transition(env, pos, actions)
    for i in range(len(pos)):
        env.reset(options={"pos": pos[i]})
        obs, r, terminated, _, _ = env.step(actions[i])
        np.testing.assert_allclose(next_pos[i], obs, atol=1e-6)
        assert reward[i] == pytest.approx(r) and done[i] == terminated
    assert 0 < done.sum() < len(pos)


def test_soft_value_iteration_solves_the_soft_bellman_equation(small_solution):
    """V = alpha log sum_a w_a exp(Q(s, a) / alpha) (S1, S2), rechecked at grid states through q(): the
    continuous-coordinate path (clip, bilinear V), not the index arithmetic the iteration used."""
    sol = small_solution
    assert sol.residual < 1e-6 and sol.sweeps < 2_000
    k = 4
    steps = np.arange(-k, k + 1) / k
    actions = np.stack(np.meshgrid(steps, steps, indexing="ij"), -1).reshape(-1, 2)
    w = np.full(2 * k + 1, 1.0 / k)
    w[[0, -1]] /= 2
    log_w = np.log(np.outer(w, w)).ravel()
    for pos in [(0.0, 0.0), (3.0, 0.5), (-7.0, 7.0), (4.25, -1.5), (0.0, -4.25)]:
        backup = so.soft_max(sol.q(np.array(pos), actions), log_w, 2.5)
        assert backup == pytest.approx(sol.value(pos), abs=1e-5)
    # the four goals are alike: V* has the task's symmetry
    np.testing.assert_allclose(sol.v, sol.v.T, atol=1e-8)
    np.testing.assert_allclose(sol.v, sol.v[::-1], atol=1e-8)


def test_soft_value_without_future_is_the_closed_form_log_partition():
    """gamma = 0 and a reward of -c |a|^2 only: V = 2 alpha log I with I = integral_{-1}^{1} exp(-c x^2 / alpha) dx
    = sqrt(pi alpha / c) erf(sqrt(c / alpha)). The trapezoid rule of (S2) misses I by its Euler-Maclaurin
    term h^2 / 12 (f'(1) - f'(-1)); the grid's V must match to that term (without the half weights at the
    box's edges it would be 0.2 off)."""
    from math import erf, exp, log, pi, sqrt

    alpha, cost, k = 2.5, 2.5, 4  # a wide integrand: the box's edges matter
    task = mg.MultiGoalEnv(goal_bonus=0.0, action_cost=cost, distance_cost=0.0)
    sol = so.soft_value_iteration(task, alpha=alpha, gamma=0.0, cells_per_unit=k)
    c = cost / alpha
    exact = sqrt(pi / c) * erf(sqrt(c))
    trapezoid = exact + (1.0 / k) ** 2 / 12 * (-4 * c * exp(-c))
    np.testing.assert_allclose(sol.v - 2 * alpha * log(exact), 2 * alpha * log(trapezoid / exact), atol=2e-4)
    assert abs(2 * alpha * log(trapezoid / exact)) > 0.02  # the term is resolved, not below the tolerance


def test_pi_star_integrates_to_one_over_the_action_box(small_solution):
    """exp((Q* - V*) / alpha) (S3) with the grid's V*, integrated on 201 x 201 cells: 1 up to the grid's error,
    which shrinks with the grid (the goal's edge makes Q* jump: first order)."""
    cells, area = so.action_cells(201)

    def mass(sol, pos):
        return np.sum(area * np.exp((sol.q(np.array(pos), cells) - sol.value(pos)) / 2.5))

    for pos in [(0.0, 0.0), (2.5, 2.5), (-2.5, 0.0)]:
        assert mass(small_solution, pos) == pytest.approx(1.0, abs=0.05)
    coarse = so.soft_value_iteration(mg.MultiGoalEnv(), alpha=2.5, gamma=0.9, cells_per_unit=2)
    assert abs(mass(small_solution, (0.0, 0.0)) - 1) < abs(mass(coarse, (0.0, 0.0)) - 1)
    log_p = small_solution.log_density((0.0, 0.0), cells, area)
    assert np.sum(area * np.exp(log_p)) == pytest.approx(1.0, abs=1e-9)  # normalised on the cells themselves


def test_pi_star_at_the_start_has_four_modes_at_radius_0_7(small_solution):
    cells, area = so.action_cells(101)
    p = np.exp(small_solution.log_density((0.0, 0.0), cells, area)).reshape(101, 101)
    assert so.count_modes(p, 0.1) == 4
    top = cells[np.argsort(p.ravel())[-1]]
    assert np.linalg.norm(top) == pytest.approx(0.7, abs=0.05) and min(abs(top)) < 0.05  # on an axis
    assert p[50, 50] < 0.2 * p.max()  # a = 0, between the modes, is a valley


def test_count_modes_counts_prominent_peaks_once_each():
    x = np.linspace(-1, 1, 81)
    X, Y = np.meshgrid(x, x, indexing="ij")

    def bump(cx, cy, h, s=0.1):
        return h * np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * s * s))

    four = sum(bump(cx, cy, 1.0) for cx, cy in [(0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5)])
    assert so.count_modes(four, 0.1) == 4
    assert so.count_modes(four + bump(0.6, 0.6, 0.05), 0.1) == 4  # 5% of the top: not a mode
    assert so.count_modes(four + bump(0.6, 0.6, 0.2), 0.1) == 5
    # a ring whose crest ripples by 2%: a grid's local maxima all along it, one region without a valley
    r, theta = np.hypot(X, Y), np.arctan2(Y, X)
    ring = (1 + 0.02 * np.cos(12 * theta)) * np.exp(-((r - 0.6) ** 2) / (2 * 0.05 ** 2))
    assert so.count_modes(ring, 0.1) == 1
    assert so.count_modes(ring * (1 + 0.5 * (np.abs(theta) < 1.0)), 0.1) == 1  # a higher arc, still no valley
    # a peak between two centres shows as two (or four) equal cells: one mode each time
    for cells in [[(2, 2), (2, 3)], [(2, 2), (3, 2)], [(2, 2), (3, 3)], [(2, 2), (2, 3), (3, 2), (3, 3)]]:
        tied = np.zeros((6, 6))
        for cell in cells:
            tied[cell] = 1.0
        assert so.count_modes(tied, 0.1) == 1


def test_distances_of_known_densities():
    cells, area = so.action_cells(201)
    uniform = np.full(len(cells), np.log(0.25))
    kl, tv, modes = so.distances(uniform, uniform, area, 0.1)
    assert kl == pytest.approx(0.0, abs=1e-12) and tv == pytest.approx(0.0, abs=1e-12)
    # p(a) = prod_i (1 + c a_i) / 2: KL(uniform || p) = 2 * (2c - (1+c) log(1+c) + (1-c) log(1-c)) / (2c) per the integral
    c = 0.6
    log_p = np.log((1 + c * cells) / 2).sum(-1)
    per_dim = (2 * c - (1 + c) * np.log(1 + c) + (1 - c) * np.log(1 - c)) / (2 * c)
    kl, tv, modes = so.distances(uniform, log_p, area, 0.1)
    assert kl == pytest.approx(2 * per_dim, rel=1e-4) and 0 < tv < 1 and modes == 1  # its top is the corner (1, 1)
    left = np.where(cells[:, 0] < 0, np.log(0.5), -60.0)  # two halves of the box: disjoint
    kl, tv, _ = so.distances(left, left[::-1], area, 0.1)
    assert tv == pytest.approx(1.0, abs=1e-9) and kl > 50


def test_gaussian_log_prob_of_given_actions_matches_its_samples():
    torch.manual_seed(0)
    agent = mg.GaussianSAC(2, 2, alpha=0.5)
    obs = torch.randn(64, 2)
    actions, log_prob = agent.sample(obs)
    keep = actions.abs().max(-1).values < 0.999  # atanh loses precision at the edges in float32
    torch.testing.assert_close(agent.log_prob(obs, actions)[keep], log_prob[keep], rtol=1e-3, atol=1e-3)


def random_flow(seed=0, scale=0.1, **kw):
    torch.manual_seed(seed)
    flow = mg.make_flow(mg.Args(**kw)).double().eval()
    with torch.no_grad():  # shifts and prior away from their initial near-identity
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


@pytest.mark.parametrize("couplings", [1, 4, 7])
def test_make_flow_builds_alternating_couplings_and_a_normalised_density(couplings):
    flow = random_flow(couplings=couplings, dropout=0.2, sigma_max=0.0)
    assert len(flow.couplings) == couplings
    masks = [c.mask.tolist() for c in flow.couplings]
    assert all(m != n for m, n in zip(masks, masks[1:])) and sorted(masks[0]) == [0.0, 1.0]
    # every dropout layer is listed (the update draws their masks from the list) and has the rate
    assert flow._dropouts == [m for m in flow.modules() if isinstance(m, mg.Dropout)]
    assert len(flow._dropouts) == 2 * couplings and all(layer.p == 0.2 for layer in flow._dropouts)
    cells, area = so.action_cells(201)
    log_p = mm.log_density(flow, (0.3, -0.2), cells)
    assert np.sum(area * np.exp(log_p)) == pytest.approx(1.0, abs=0.02)


def test_make_flow_defaults_are_the_papers_flow_policy():
    torch.manual_seed(5)
    reference = mg.meow_continuous_action.FlowPolicy(2, 2, 2.5, 1.0, -2.0)
    torch.manual_seed(5)
    flow = mg.make_flow(mg.Args())
    assert [l.p for l in flow._dropouts] == [0.1] * 8
    for (name, a), (_, b) in zip(reference.state_dict().items(), flow.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_meow_density_before_the_tanh_has_one_mode():
    """Additive couplings preserve volume, so the pre-tanh density is the Gaussian prior's carried along
    an invertible map: its super-level sets are connected and it has a single mode. pi* has four."""
    z_actions, log_jacobian = mm.pre_tanh_grid(81)
    for seed, couplings in [(0, 4), (1, 4), (2, 8), (3, 4), (4, 6)]:
        flow = random_flow(seed, scale=0.3, couplings=couplings)  # curved ridges: many local maxima on the grid
        assert mm.pre_tanh_modes(mm.log_density(flow, (0.0, 0.0), z_actions), log_jacobian, 0.1) == 1
    sol = so.soft_value_iteration(mg.MultiGoalEnv(), alpha=2.5, gamma=0.9, cells_per_unit=2)
    assert mm.pre_tanh_modes(sol.q(np.zeros(2), z_actions) / 2.5, log_jacobian, 0.1) == 4


def test_modes_script_end_to_end(tmp_path):
    """Two seeds of nothing learned: the table, the per-state lines and the figure."""
    figure = tmp_path / "modes.png"
    cmd = [sys.executable, MODES_SCRIPT, "--seeds", "2", "--steps", "1050", "1100", "--cells-per-unit", "2",
           "--action-cells", "41", "--figure", str(figure)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| pi* (exact) | | | 0 / 0 / 4 (4) | 0 / 0 / 2 (2) | 0 / 0 / 1 (1) |" in out
    rows = re.findall(r"^\| (MEow|Gaussian SAC) \| (\d) \| (\d+) \| (.*) \|$", out, re.M)
    assert [(p, s, n) for p, s, n, _ in rows] == [("MEow", "2", "1050"), ("MEow", "2", "1100"),
                                                 ("Gaussian SAC", "2", "1050"), ("Gaussian SAC", "2", "1100")]
    for *_, cells in rows:
        for cell in cells.split(" | "):
            kl, tv, modes = re.fullmatch(r"(\S+) / (\S+) / (\d+) \(\d+\)", cell).groups()
            assert float(kl) > 0 and 0 < float(tv) <= 1
    image = matplotlib.image.imread(str(figure))
    assert image.shape[1] > 2.5 * image.shape[0]  # three panels side by side
    assert not (tmp_path / "docs").exists()


@pytest.mark.parametrize("overrides, message", [(dict(steps=(800,)), "largest --steps"), (dict(mode_share=0.0), "--mode-share"),
                                                (dict(couplings=0), "--couplings"), (dict(seeds=()), "--seeds")])
def test_modes_script_rejects_bad_settings_before_any_work(tmp_path, overrides, message):
    figure = tmp_path / "modes.png"
    with pytest.raises(SystemExit, match="^error: .*" + message):
        mm.main(mm.Args(figure=str(figure), **overrides))
    assert not figure.exists()


# ---------------------------------------------------------------- a fork's network on the toy
def test_a_forks_network_trains_on_the_toy_and_is_measured(tmp_path, capsys):
    from test_ablations import make_fork

    fork = make_fork("affine", str(tmp_path))
    args = tiny_args(tmp_path, script=fork)
    flow = mg.make_flow(args)
    assert [type(c).__name__ for c in flow.couplings] == ["AffineCoupling"] * 4
    assert len(flow._dropouts) == 16  # a shift and a scale net per coupling
    mg.main(args)
    out = capsys.readouterr().out
    assert out.count("MEow (fork_affine.py) seed 3: reached") == 1 and os.path.getsize(args.figure) > 10_000
    # multigoal_modes names the fork in its table
    table = mm.table([(4, 4)] * 3, [(mg.agent_name(args), 3, 260, [dict(kl=1.0, tv=0.5, modes=2, pre_tanh=2)] * 3)])
    assert "| MEow (fork_affine.py) | 3 | 260 | 1.00 / 0.50 / 2 (2) |" in table
    with pytest.raises(SystemExit, match="^error: --couplings above 4 adds additive couplings, and .*fork_affine.py's are AffineCoupling"):
        mg.check_args(tiny_args(tmp_path, script=fork, couplings=6))
    with pytest.raises(SystemExit, match="^error: no such MEow script: .*missing.py"):
        mg.check_args(tiny_args(tmp_path, script=str(tmp_path / "missing.py")))
