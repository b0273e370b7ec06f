"""How much of a run's value bias a slow target network explains: a one-number model of Polyak averaging.

The online network regresses Q(s,a) onto r + gamma * (1 - d) * V_target(s') (E5), and the target moves
a share tau of the way to the online weights per update. Take the whole value function as one number:
q, the target's value, and G, the soft return the current policy collects (the run's `bias/soft_return`).
With the online Q fitted to its regression target, the bootstrapped part of Q is gamma * (1 - p) * q, where
p is the share of the buffer's transitions that terminate (their target has no V), so per update

    q <- q + tau * (1 - gamma * (1 - p)) * (G - q),    Q = G - gamma * (1 - p) * (G - q).

The gap G - Q closes at the rate tau * (1 - gamma * (1 - p)) per update, a time constant of
1 / (tau * (1 - gamma)) updates where episodes seldom terminate (Ant-v4's tau 0.0001: 1M updates) and a
shorter one where they often do. This script integrates the model over a run of meow_continuous_action.py,
one update per step from learning_starts on with q = 0 there (a fresh network's values are near 0), with
G interpolated between its log points and p counted from the episodes that ended before the time limit
(`charts/episodic_length`; a run no longer than its buffer keeps every transition), and prints the
logged Q (`bias/q_value`) beside the model's, each averaged over the log points within --window steps.
tau, gamma, learning_starts, buffer_size and env_id are read from the run's hyperparameters.

    python benchmarks/target_lag.py runs/Ant-v4__meow_continuous_action__3__1796459537 --steps 100k 500k 1M
"""
import argparse
import os
import re
import sys

import gymnasium as gym
import numpy as np
from tensorboard.util import tensor_util

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot  # noqa: E402  (benchmarks/ is not a package)

NEEDED = ("tau", "gamma", "learning_starts", "buffer_size", "env_id")


def hyperparameters(path):
    """The run's Args as the script wrote them (its `hyperparameters` text: one |name|value| row each)."""
    for event in plot.events(path):
        for value in event.summary.value:
            if value.tag.startswith("hyperparameters"):
                text = tensor_util.make_ndarray(value.tensor).item().decode()
                return dict(re.findall(r"^\|([^|]+)\|([^|]*)\|$", text, re.M))
    return {}


def lag_model(soft_return, terminal_share, tau, gamma, q0=0.0):
    """The model's Q after each update, given G and p per update (arrays of one length)."""
    rate = tau * (1.0 - gamma * (1.0 - terminal_share))
    q, target = np.empty(len(soft_return)), q0
    for i, (g, r) in enumerate(zip(soft_return, rate)):
        q[i] = target
        target += r * (g - target)
    return soft_return - gamma * (1.0 - terminal_share) * (soft_return - q)


def terminal_share(lengths, time_limit, last_step):
    """p after each step 1..last_step: terminated episodes (shorter than time_limit) over the steps stored."""
    ends = np.zeros(last_step + 1)
    for step, length in lengths:
        if length < time_limit and step <= last_step:
            ends[step] += 1
    return (np.cumsum(ends) / np.maximum(np.arange(last_step + 1), 1))[1:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory of meow_continuous_action.py (its event files)")
    parser.add_argument("--steps", nargs="+", type=plot.parse_steps, default=None, help="steps to print (default: every 100k and the last)")
    parser.add_argument("--window", type=plot.parse_steps, default=10_000, help="average the logged and the model's values over log points this many steps either side")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.run):
        plot.fail("no run directory %s" % args.run)
    hp = hyperparameters(args.run)
    missing = [k for k in NEEDED if k not in hp]
    if missing:
        plot.fail("%s has no hyperparameters text with %s: not a run of meow_continuous_action.py" % (args.run, ", ".join(missing)))
    tau, gamma, start = float(hp["tau"]), float(hp["gamma"]), int(hp["learning_starts"])
    logged_q, logged_g = (dict(plot.read_evals(args.run, tag=t)) for t in ("bias/q_value", "bias/soft_return"))
    steps = np.array(sorted(set(logged_q) & set(logged_g)))
    if len(steps) < 2:
        plot.fail("%s has fewer than two log points with bias/q_value and bias/soft_return" % args.run)
    last = int(steps[-1])
    if last > int(hp["buffer_size"]):
        plot.fail("%s runs past its buffer (%s): the terminal share would count transitions it dropped" % (args.run, hp["buffer_size"]))
    try:
        time_limit = gym.spec(hp["env_id"]).max_episode_steps
    except gym.error.Error:
        plot.fail("%s ran %s, which gymnasium does not know here: its time limit is unknown" % (args.run, hp["env_id"]))
    p = terminal_share(plot.read_evals(args.run, tag="charts/episodic_length"), time_limit, last)
    updates = np.arange(start + 1, last + 1)  # steps after which an update has been made
    g = np.interp(updates, steps, [logged_g[s] for s in steps])
    model = np.interp(steps, updates, lag_model(g, p[updates - 1], tau, gamma))
    q, g_at = np.array([logged_q[s] for s in steps]), np.array([logged_g[s] for s in steps])
    wanted = args.steps or sorted(set(range(100_000, last + 1, 100_000)) | {last})
    for want in wanted:
        if not steps[0] <= want <= last:
            plot.fail("step %s is outside the run's log points (%s to %s)" % (plot.format_steps(want), plot.format_steps(int(steps[0])), plot.format_steps(last)))
    print("%s: tau %g, gamma %g, learning_starts %d, time limit %d" % (os.path.basename(os.path.normpath(args.run)), tau, gamma, start, time_limit))
    print("| step | terminal share p | G | Q logged | Q model | Q/G logged | Q/G model |")
    print("|---|---|---|---|---|---|---|")
    for want in wanted:
        near = np.abs(steps - want) <= args.window
        mg, mq, mm = g_at[near].mean(), q[near].mean(), model[near].mean()
        print("| %s | %.4f | %.1f | %.1f | %.1f | %.2f | %.2f |" % (plot.format_steps(want), p[want - 1], mg, mq, mm, mq / mg, mm / mg))


if __name__ == "__main__":
    main()
