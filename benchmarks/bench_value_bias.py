"""Per-step cost of the value-bias measure against what a training step of meow_continuous_action.py spends
on acting and on one update, at Hopper-v4's sizes, one env, in interleaved rounds (best of each). The measure's
share of a step: the V pass the loop's act() adds to sampling (min_k V_k(s), in the same call, compiled with
it when the run compiles) and ValueBias.act + ValueBias.step (its running sums, eager).

    python benchmarks/bench_value_bias.py             # eager, as runs under 20,000 updates
    python benchmarks/bench_value_bias.py --compile   # compiled act() and update, as the plain command
    python benchmarks/bench_value_bias.py --threads 2 --rounds 9
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import meow_continuous_action as meow  # noqa: E402

OBS_DIM, ACT_DIM = 11, 3  # Hopper-v4


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is reported")
    parser.add_argument("--batch-size", type=int, default=256, help="the update's minibatch")
    parser.add_argument("--compile", action="store_true", help="torch.compile sampling, act() and the update, as the plain command does")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy, target = (meow.FlowPolicy(OBS_DIM, ACT_DIM, 0.25, -0.3, -5.0) for _ in range(2))
    update, _ = meow.make_update(policy, target, 1e-3, 0.99, 0.005, 30.0, args.compile)
    rb = meow.ReplayBuffer(10_000, OBS_DIM, ACT_DIM, "cpu")
    rb.add(torch.randn(10_000, OBS_DIM), torch.rand(10_000, ACT_DIM) * 2 - 1, torch.randn(10_000), torch.randn(10_000, OBS_DIM), torch.zeros(10_000))
    bias = meow.ValueBias(1, 0.25, 0.99, "cpu")
    obs, reward = torch.randn(1, OBS_DIM), torch.ones(1)

    def act(obs):  # the loop's act(): sampling and min_k V_k(s) in one call
        actions, log_prob = policy.sample(obs)
        return actions, log_prob, policy.value(obs).min(dim=1).values

    act = meow.maybe_compile(act, args.compile, "cpu", "act()")
    sample = meow.maybe_compile(policy.sample, args.compile, "cpu", "sampling")
    with torch.no_grad():
        _, log_prob, value = act(obs)

    def sample_only():
        with torch.no_grad():
            sample(obs)

    def sample_and_value():
        with torch.no_grad():
            act(obs)

    def sums():
        bias.act(log_prob, value)
        bias.step(reward, False)

    calls = {"sampling": (sample_only, 1000), "act()": (sample_and_value, 1000), "the sums": (sums, 1000),
             "update": (lambda: update(rb.sample(args.batch_size)), 50)}
    best = {name: float("inf") for name in calls}
    for _ in range(args.rounds):
        for name, (f, n) in calls.items():
            f()
            start = time.perf_counter()
            for _ in range(n):
                f()
            best[name] = min(best[name], (time.perf_counter() - start) / n * 1e6)
    measure = best["act()"] - best["sampling"] + best["the sums"]
    print("torch %s, %d thread(s), %s: %s per call; the measure (act() - sampling + the sums) %.0f us, %.1f%% of sampling + update"
          % (torch.__version__, args.threads, "compiled" if args.compile else "eager", ", ".join("%s %.0f us" % kv for kv in best.items()),
             measure, 100 * measure / (best["sampling"] + best["update"])))

if __name__ == "__main__":
    main()
