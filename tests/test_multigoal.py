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
    agent = mg.FlowPolicy(2, 2, 0.5, 0.0, -5.0).eval()
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
    agent = mg.FlowPolicy(2, 2, 0.5, 0.0, -5.0) if kind == "meow" else mg.GaussianSAC(2, 2, 0.5)
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
