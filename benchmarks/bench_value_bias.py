"""Per-step cost of the value-bias measure (ValueBias.act + ValueBias.step: one V pass of the acting network
and its running sums) against what a training step of meow_continuous_action.py spends on acting (sample())
and on one update, at Hopper-v4's sizes, one env, eager, in interleaved rounds (best of each).

    python benchmarks/bench_value_bias.py
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy, target = (meow.FlowPolicy(OBS_DIM, ACT_DIM, 0.25, -0.3, -5.0) for _ in range(2))
    update, _ = meow.make_update(policy, target, 1e-3, 0.99, 0.005, 30.0)
    rb = meow.ReplayBuffer(10_000, OBS_DIM, ACT_DIM, "cpu")
    rb.add(torch.randn(10_000, OBS_DIM), torch.rand(10_000, ACT_DIM) * 2 - 1, torch.randn(10_000), torch.randn(10_000, OBS_DIM), torch.zeros(10_000))
    bias = meow.ValueBias(1, 0.25, 0.99, "cpu")
    obs, reward = torch.randn(1, OBS_DIM), torch.ones(1)
    with torch.no_grad():
        _, log_prob = policy.sample(obs)

    def sample():
        with torch.no_grad():
            policy.sample(obs)

    def measure():
        bias.act(policy, obs, log_prob)
        bias.step(reward, False)

    calls = {"sample()": (sample, 1000), "the measure": (measure, 1000), "update": (lambda: update(rb.sample(args.batch_size)), 50)}
    best = {name: float("inf") for name in calls}
    for _ in range(args.rounds):
        for name, (f, n) in calls.items():
            f()
            start = time.perf_counter()
            for _ in range(n):
                f()
            best[name] = min(best[name], (time.perf_counter() - start) / n * 1e6)
    print("torch %s, %d thread(s): %s per call; the measure adds %.1f%% to sample() + update"
          % (torch.__version__, args.threads, ", ".join("%s %.0f us" % kv for kv in best.items()),
             100 * best["the measure"] / (best["sample()"] + best["update"])))


if __name__ == "__main__":
    main()
