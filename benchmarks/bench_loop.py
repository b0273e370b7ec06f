"""Whole-loop training speed of meow_continuous_action.py on Hopper-v4, after learning starts.

    python benchmarks/bench_loop.py                       # shipped update vs. the straightforward one
    python benchmarks/bench_loop.py --steps 5000 --env-id Hopper-v5

Runs the real training loop (env stepping, acting, replay buffer, one update per step, TensorBoard)
in a temporary directory, once per variant: the shipped update, the straightforward update of
bench_update.py patched in, and (if asked) the shipped update with --compile. It reports environment
steps per second over the last --steps steps (no evaluation in between), read from the wall times of
the logged `charts/SPS` points; the --warmup-steps updates before them are not timed (for --compile
they include the compilation).
"""
import argparse
import glob
import os
import sys
import tempfile

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import meow_continuous_action as meow  # noqa: E402
from bench_update import make_straightforward_update  # noqa: E402


def training_sps(args, variant):
    shipped = meow.make_update
    if variant == "straightforward":
        meow.make_update = make_straightforward_update  # a drop-in: same signature
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            meow.main(meow.Args(env_id=args.env_id, seed=args.seed, learning_starts=args.learning_starts,
                                total_timesteps=args.learning_starts + args.warmup_steps + args.steps, eval_frequency=10 ** 9,
                                log_frequency=args.learning_starts, torch_threads=args.threads, compile=variant == "compiled"))
            (run_dir,) = glob.glob("runs/*")
            acc = EventAccumulator(run_dir)
            acc.Reload()
            points = {e.step: e.wall_time for e in acc.Scalars("charts/SPS")}
        finally:
            os.chdir(cwd)
            meow.make_update = shipped
    start = args.learning_starts + args.warmup_steps
    return args.steps / (points[start + args.steps] - points[start])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="Hopper-v4")
    parser.add_argument("--steps", type=int, default=3000, help="training steps timed after learning starts")
    parser.add_argument("--learning-starts", type=int, default=1000, help="random-action steps first (not timed)")
    parser.add_argument("--warmup-steps", type=int, default=1000, help="training steps after learning starts, not timed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["shipped", "straightforward"], choices=["shipped", "straightforward", "compiled"])
    args = parser.parse_args()
    if args.steps % args.learning_starts or args.warmup_steps % args.learning_starts:
        parser.error("--steps and --warmup-steps must be multiples of --learning-starts (the SPS points are logged at its multiples)")

    results = {variant: training_sps(args, variant) for variant in args.variants}
    print("\n%s, torch %s, %d thread(s), %d steps timed after %d random and %d untimed training ones"
          % (args.env_id, torch.__version__, args.threads, args.steps, args.learning_starts, args.warmup_steps))
    print("| update | training SPS |")
    print("|---|---|")
    for variant, sps in results.items():
        print("| %s | %.1f |" % (variant, sps))
    if "shipped" in results and "straightforward" in results:
        print("speed-up of the shipped loop: %.2fx" % (results["shipped"] / results["straightforward"]))


if __name__ == "__main__":
    main()
