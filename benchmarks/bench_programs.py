"""Training speed of whole programs as a user runs them: the plain command, CleanRL's SAC, the authors' MEow.

    python benchmarks/bench_programs.py                          # the plain command alone, 3 rounds
    python benchmarks/bench_programs.py --sac PATH/sac_continuous_action.py --authors PATH/meow_continuous_action.py

Each program runs on Hopper-v4 seed 1 in a new temporary directory, alone, and its speed is the number of
environment steps per second between two steps after learning starts, read off the wall times of the
TensorBoard points it logs (the first point at or after each step), with no evaluation in between:

  ours     meow_continuous_action.py, 25,000 steps (20,000 updates: the default command compiles), 20.5k-25k
  sac      CleanRL's sac_continuous_action.py, 12,600 steps, 6k-12.5k
  authors  the authors' cleanrl/cleanrl/meow_continuous_action.py with their README's Hopper flags, 9,600 steps, 6k-9.5k

CleanRL's and the authors' scripts are obtained, and made ready for the installed gymnasium, outside this
repository; pass their paths. "default" threads leaves each program its own default (2 here for every one
of them on a 2-core machine); a number sets OMP_NUM_THREADS for all of them and --torch-threads for ours.
Programs and thread counts are interleaved within each round, so that a slower spell of the machine falls
on all of them alike. The cores must be otherwise idle.
"""
import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "meow_continuous_action.py")
AUTHORS_HOPPER = ["--tau", "0.005", "--alpha", "0.25", "--learning-starts", "5000", "--sigma-max", "-0.3",
                  "--sigma-min", "-5.0", "--deterministic_action", "--no-cuda"]


def steps_per_second(run_dir, first, last):
    """Steps per second between the first TensorBoard points at or after steps `first` and `last` (any tag)."""
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    points = sorted((e.step, e.wall_time) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag))

    def first_at(mark):
        later = [point for point in points if point[0] >= mark]
        if not later:
            raise ValueError("%s has no point at or after step %d (its last is %s)" % (run_dir, mark, points[-1][0] if points else None))
        return later[0]

    (s0, w0), (s1, w1) = first_at(first), first_at(last)
    if s1 <= s0 or w1 <= w0:
        raise ValueError("%s: no steps between %d and %d" % (run_dir, first, last))
    return (s1 - s0) / (w1 - w0)


def program_sps(command, window, threads=None):
    """Run `command` in a new temporary directory and return its steps per second over `window`."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise RuntimeError("%s exited with %d: %s" % (command[1], done.returncode, " | ".join(tail)))
        runs = sorted(glob.glob(os.path.join(tmp, "runs", "*")))
        if len(runs) != 1:
            raise RuntimeError("%s wrote %d run directories under runs/, expected one" % (command[1], len(runs)))
        return steps_per_second(runs[0], *window)


def programs(args):
    """name -> (command without the thread flag, window)."""
    hopper = ["--env-id", "Hopper-v4", "--seed", "1"]
    table = {"ours": ([sys.executable, SCRIPT, *hopper, "--total-timesteps", "25000"], (20_500, 25_000))}
    if args.sac:
        table["sac"] = ([sys.executable, args.sac, *hopper, "--total-timesteps", "12600", "--no-cuda"], (6_000, 12_500))
    if args.authors:
        table["authors"] = ([sys.executable, args.authors, *hopper, "--total-timesteps", "9600", *AUTHORS_HOPPER], (6_000, 9_500))
    return table


def thread_count(text):
    if text == "default":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("expected 'default' or a positive integer, got %r" % text)
    return int(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sac", help="path of CleanRL's sac_continuous_action.py")
    parser.add_argument("--authors", help="path of the authors' cleanrl/cleanrl/meow_continuous_action.py")
    parser.add_argument("--threads", nargs="+", type=thread_count, default=[None, 1], help="'default' and/or thread counts")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each program at each thread count")
    args = parser.parse_args(argv)
    for flag in ("sac", "authors"):
        path = getattr(args, flag)
        if path is not None and not os.path.isfile(path):
            parser.exit(2, "error: --%s: no such file: %s\n" % (flag, path))
    if args.rounds < 1:
        parser.exit(2, "error: --rounds must be >= 1\n")

    results, table = {}, programs(args)
    for _ in range(args.rounds):
        for threads in args.threads:
            for name, (command, window) in table.items():
                flags = ["--torch-threads", str(threads)] if name == "ours" and threads is not None else []
                try:
                    sps = program_sps(command + flags, window, threads)
                except (RuntimeError, ValueError) as err:
                    sys.exit("error: %s" % err)
                results.setdefault((name, threads), []).append(sps)
                print("%s, %s threads: %.1f steps/s" % (name, threads or "default", sps), flush=True)
    print("\n| program | threads | steps/s, each run | mean |")
    print("|---|---|---|---|")
    for (name, threads), runs in results.items():
        print("| %s | %s | %s | %.1f |" % (name, threads or "default", ", ".join("%.1f" % r for r in runs), statistics.mean(runs)))
    for threads in args.threads:
        for peer in ("sac", "authors"):
            if ("ours", threads) in results and (peer, threads) in results:
                ratio = statistics.mean(results["ours", threads]) / statistics.mean(results[peer, threads])
                print("ours / %s at %s threads: %.2f" % (peer, threads or "default", ratio))


if __name__ == "__main__":
    main()
