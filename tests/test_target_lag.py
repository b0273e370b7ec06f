"""benchmarks/target_lag.py: the one-number model of a slow target against hand computations, on written event files."""
import os
import subprocess
import sys

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import target_lag  # noqa: E402  (benchmarks/ is not a package)


def test_the_gap_closes_at_tau_times_one_minus_gamma_where_no_episode_terminates():
    tau, gamma, g, n = 0.01, 0.9, 100.0, 500
    q = target_lag.lag_model(np.full(n, g), np.zeros(n), tau, gamma)
    # q_target after i updates is g * (1 - (1 - tau * (1 - gamma))^i); Q bootstraps gamma times it
    expected = g - gamma * g * (1 - tau * (1 - gamma)) ** np.arange(n)
    np.testing.assert_allclose(q, expected, rtol=1e-12)


def test_where_every_transition_terminates_q_is_the_return_at_once():
    g = np.array([3.0, -7.0, 40.0])
    np.testing.assert_allclose(target_lag.lag_model(g, np.ones(3), 1e-4, 0.99), g)


def test_a_rising_return_leaves_q_further_behind_than_a_flat_one():
    n = 20_000
    flat = target_lag.lag_model(np.full(n, 100.0), np.zeros(n), 0.001, 0.99)
    rising = target_lag.lag_model(np.linspace(0.0, 100.0, n), np.zeros(n), 0.001, 0.99)
    assert rising[-1] < flat[-1] < 100.0


def test_the_terminal_share_counts_the_episodes_shorter_than_the_time_limit():
    lengths = [(10, 10), (1010, 1000), (1015, 5)]  # (step at its end, length): a fall, a time-out, a fall
    p = target_lag.terminal_share(lengths, 1000, 1015)
    assert p[9] == pytest.approx(1 / 10) and p[1009] == pytest.approx(1 / 1010) and p[1014] == pytest.approx(2 / 1015)
    assert p[8] == 0.0


def write_run(path, hyperparameters, q, g, lengths):
    writer = SummaryWriter(path)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join("|%s|%s|" % kv for kv in hyperparameters.items()))
    for step in sorted(q):
        writer.add_scalar("bias/q_value", q[step], step)
        writer.add_scalar("bias/soft_return", g[step], step)
    for step, length in lengths:
        writer.add_scalar("charts/episodic_length", length, step)
    writer.close()


def run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "target_lag.py"), *args], capture_output=True, text=True)


HP = {"env_id": "Hopper-v4", "tau": 0.01, "gamma": 0.99, "learning_starts": 0, "buffer_size": 1_000_000, "seed": 1}


def test_a_run_prints_its_logged_q_beside_the_models(tmp_path):
    steps = range(1000, 5001, 1000)
    write_run(str(tmp_path), HP, {s: 10.0 for s in steps}, {s: 50.0 for s in steps}, [(s, 1000) for s in steps])  # time-outs only: p = 0
    done = run(str(tmp_path), "--steps", "2000", "5000", "--window", "1")
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r[0].strip() for r in rows] == ["2k", "5k"]
    for (step, p, g, q, model, q_over_g, model_over_g), s in zip(rows, (2000, 5000)):
        expected = 50.0 - 0.99 * 50.0 * (1 - 0.01 * (1 - 0.99)) ** (s - 1)  # one update per step from step 1
        assert (float(p), float(g), float(q), float(q_over_g)) == (0.0, 50.0, 10.0, 0.2)
        assert float(model) == pytest.approx(expected, abs=0.05) and float(model_over_g) == pytest.approx(expected / 50, abs=0.005)


def test_bad_input_gets_one_error_line(tmp_path):
    write_run(str(tmp_path / "other"), {"seed": 1}, {1000: 1.0, 2000: 1.0}, {1000: 1.0, 2000: 1.0}, [])
    write_run(str(tmp_path / "ok"), HP, {1000: 1.0, 2000: 1.0}, {1000: 1.0, 2000: 1.0}, [])
    for args, says in (([str(tmp_path / "none")], "no run directory"),
                       ([str(tmp_path / "other")], "no hyperparameters text with tau"),
                       ([str(tmp_path / "ok"), "--steps", "3k"], "outside the run's log points (1k to 2k)")):
        done = run(*args)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.startswith("error: ") and says in done.stderr and done.stderr.count("\n") == 1
