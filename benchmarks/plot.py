"""Plot learning curves of MEow runs against the paper, and print a comparison table.

Reads the TensorBoard event files of the given runs (run directories, or parent directories
searched recursively, or glob patterns), groups them by environment id and experiment name
(parsed from the run directory name `{env_id}__{exp_name}__{seed}__{unix_time}`) and, per
environment, writes OUT_DIR/{env_id}_{tag}.png: the mean over seeds of --tag versus
environment steps, with a shaded band of +- one standard deviation over seeds (numpy's
population std, ddof=0; the band is zero where a single seed has data). A seed that was run
several times counts once, with its newest run.

For --tag eval/return (the deterministic-policy evaluation return, what the paper reports)
the paper's numbers are overlaid:
  - benchmarks/paper_results.csv: returns of MEow and SAC at 100k/200k/300k/500k steps, read
    off the paper's Figure 3 by eye (about +-10%, mean over 5 seeds); drawn as markers with
    a +-10% error bar;
  - benchmarks/paper_final_returns.csv: the final average returns the paper reports for MEow
    and the step budget they were reached at; drawn as a dotted horizontal line.

It also prints (on stdout, so it can be redirected to a file) a markdown table with our
mean +- std (n seeds) at each checkpoint next to the paper's numbers. Our value at a
checkpoint is each seed's last evaluation at or before it, and no more than one evaluation
interval before it; "–" means the runs did not get there. The "final" column is our last
evaluation reached by every seed, and the paper's final return with its step budget.

With --every STEPS it also prints, after that table, each seed's value every STEPS steps (same rule
as above), for reports that list every seed.

Example:
    python benchmarks/plot.py runs/ --out-dir docs/
    python benchmarks/plot.py runs/ --out-dir docs/ --every 50k
"""
import argparse
import collections
import csv
import glob
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or available on servers
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = os.path.dirname(os.path.abspath(__file__))
PAPER_CHECKPOINTS_CSV = os.path.join(HERE, "paper_results.csv")
PAPER_FINAL_CSV = os.path.join(HERE, "paper_final_returns.csv")
PAPER_TAG = "eval/return"
RUN_NAME = re.compile(r"^(?P<env_id>.+?)__(?P<exp_name>.+)__(?P<seed>-?\d+)__(?P<time>\d+)$")
PAPER_ERROR = 0.1  # the Figure 3 numbers were read by eye

Run = collections.namedtuple("Run", ["env_id", "exp_name", "seed", "time", "path"])


def fail(message):
    print("error: %s" % message, file=sys.stderr)
    sys.exit(2)


def warn(message):
    print("warning: %s" % message, file=sys.stderr)


def parse_steps(text):
    """'100k' -> 100000, '1.5M' -> 1500000, '600' -> 600."""
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(round(float(text[:-1] if scale > 1 else text) * scale))


def format_steps(steps):
    for suffix, scale in (("M", 1_000_000), ("k", 1_000)):
        if steps >= scale and steps % (scale // 10) == 0:
            return ("%g" % (steps / scale)) + suffix
    return str(steps)


def find_run_dirs(patterns):
    """Every directory holding an event file, under each pattern's matches."""
    found = set()
    for pattern in patterns:
        matches = glob.glob(pattern)
        if not matches:
            fail("no such run directory or pattern: %s" % pattern)
        for top in matches:
            for dirpath, _, filenames in os.walk(top):
                if any(name.startswith("events.out.tfevents.") for name in filenames):
                    found.add(os.path.normpath(dirpath))
    if not found:
        fail("no runs found (no TensorBoard event files) under: %s" % " ".join(patterns))
    return sorted(found)


def parse_runs(run_dirs):
    """Runs grouped by (env_id, exp_name), one per seed: the newest when a seed was run again."""
    groups = collections.defaultdict(dict)
    for path in run_dirs:
        match = RUN_NAME.match(os.path.basename(path))
        if not match:
            warn("skipping %s: its name is not {env_id}__{exp_name}__{seed}__{time}" % path)
            continue
        run = Run(match["env_id"], match["exp_name"], int(match["seed"]), int(match["time"]), path)
        seeds = groups[run.env_id, run.exp_name]
        if run.seed in seeds:
            older, newer = sorted([seeds[run.seed], run], key=lambda r: r.time)
            warn("%s and %s have the same seed; using the newer one" % (older.path, newer.path))
            run = newer
        seeds[run.seed] = run
    if not groups:
        fail("no run directory has a name of the form {env_id}__{exp_name}__{seed}__{time}")
    return groups


def read_scalar(path, tag):
    """(steps, values) of one tag, sorted by step; a step logged twice keeps its last value."""
    accumulator = EventAccumulator(path, size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    if tag not in accumulator.Tags()["scalars"]:
        return np.array([], dtype=int), np.array([])
    by_step = {event.step: event.value for event in accumulator.Scalars(tag)}
    steps = np.array(sorted(by_step), dtype=int)
    return steps, np.array([by_step[s] for s in steps])


def value_at(steps, values, checkpoint):
    """The last value at or before checkpoint, if it is less than one logging interval before it."""
    i = np.searchsorted(steps, checkpoint, side="right") - 1
    if i < 0:
        return None
    interval = steps[1] - steps[0] if len(steps) > 1 else steps[0]
    return values[i] if checkpoint - steps[i] < interval else None


def mean_std(values):
    values = np.asarray(values, dtype=float)
    return values.mean(), values.std()


def curve(series):
    """Mean and std over the seeds at every step any seed logged (seeds may stop at different steps)."""
    by_step = collections.defaultdict(list)
    for steps, values in series:
        for s, v in zip(steps, values):
            by_step[s].append(v)
    steps = np.array(sorted(by_step))
    stats = np.array([mean_std(by_step[s]) for s in steps])
    return steps, stats[:, 0], stats[:, 1]


def load_paper():
    """({env: [(algorithm, values)]}, [(label, steps)]) from Figure 3, and {env: (algorithm, steps, return)}."""
    with open(PAPER_CHECKPOINTS_CSV, newline="") as f:
        rows = list(csv.reader(f))
    checkpoints = [(label, parse_steps(label)) for label in rows[0][2:]]
    curves = collections.defaultdict(list)
    for env_id, algorithm, *values in rows[1:]:
        curves[env_id].append((algorithm, [float(v) for v in values]))
    with open(PAPER_FINAL_CSV, newline="") as f:
        final = {row["environment"]: (row["algorithm"], int(row["steps"]), float(row["return"])) for row in csv.DictReader(f)}
    return curves, checkpoints, final


def plot_env(env_id, groups, tag, paper, out_dir):
    curves, checkpoints, final = paper
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for exp_name, series in groups:
        steps, mean, std = curve(series)
        line = ax.plot(steps, mean, label="%s (mean ± std, %d seeds)" % (exp_name, len(series)))[0]
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if tag == PAPER_TAG:
        x = [steps for _, steps in checkpoints]
        for (algorithm, values), marker in zip(curves.get(env_id, []), "*sD^v"):
            y = np.array(values)
            # hollow, so that equal numbers of two algorithms stay visible on top of each other
            ax.errorbar(x, y, yerr=PAPER_ERROR * y, fmt=marker, markersize=10, mfc="none", mew=1.5, capsize=3, label="paper %s (Fig. 3, ±10%%)" % algorithm)
        if env_id in final:
            algorithm, steps, value = final[env_id]
            ax.axhline(value, color="gray", linestyle=":", label="paper %s final: %.0f at %s steps" % (algorithm, value, format_steps(steps)))
    ax.set_title(env_id)
    ax.set_xlabel("environment steps")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_steps(int(x))))
    ax.set_ylabel(tag)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, "%s_%s.png" % (env_id, re.sub(r"[^A-Za-z0-9.-]+", "_", tag)))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def values_at(series, checkpoint):
    """Each seed's value at checkpoint, leaving out the seeds that did not get there."""
    values = (value_at(steps, values, checkpoint) for steps, values in series)
    return [v for v in values if v is not None]


def format_ours(values):
    if not values:
        return "–"
    mean, std = mean_std(values)
    return "%.1f ± %.1f (n=%d)" % (mean, std, len(values))


def table(by_env, tag, paper):
    curves, checkpoints, final = paper
    show_paper = tag == PAPER_TAG
    header = ["environment", "source"] + [label for label, _ in checkpoints] + ["final"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for env_id, groups in sorted(by_env.items()):
        for exp_name, series in groups:
            cells = [format_ours(values_at(series, step)) for _, step in checkpoints]
            last_common = min(steps[-1] for steps, _ in series)
            cells.append("%s at %s" % (format_ours(values_at(series, last_common)), format_steps(last_common)))
            lines.append("| %s | ours: %s | %s |" % (env_id, exp_name, " | ".join(cells)))
        if not show_paper:
            continue
        for algorithm, values in curves.get(env_id, []):
            cells = ["%.0f" % v for v in values]
            fin = final.get(env_id)
            cells.append("%.2f at %s" % (fin[2], format_steps(fin[1])) if fin and fin[0] == algorithm else "–")
            lines.append("| %s | paper %s | %s |" % (env_id, algorithm, " | ".join(cells)))
        if env_id in final and env_id not in curves:
            algorithm, steps, value = final[env_id]
            cells = ["–"] * len(checkpoints) + ["%.2f at %s" % (value, format_steps(steps))]
            lines.append("| %s | paper %s | %s |" % (env_id, algorithm, " | ".join(cells)))
    return "\n".join(lines)


def seed_table(by_env, seeds_of, every):
    """Each seed's value at every multiple of `every` up to the last step any seed logged."""
    last = max(steps[-1] for groups in by_env.values() for _, series in groups for steps, _ in series)
    checkpoints = list(range(every, last + 1, every))
    lines = ["| environment | seed | " + " | ".join(format_steps(c) for c in checkpoints) + " |", "|" + "---|" * (len(checkpoints) + 2)]
    for env_id, groups in sorted(by_env.items()):
        for exp_name, series in groups:
            for seed, (steps, values) in sorted(zip(seeds_of[env_id, exp_name], series), key=lambda item: item[0]):
                cells = [value_at(steps, values, c) for c in checkpoints]
                lines.append("| %s | %s %d | %s |" % (env_id, exp_name, seed, " | ".join("–" if v is None else "%.0f" % v for v in cells)))
    return "\n".join(lines)


def main(argv):
    parser = argparse.ArgumentParser(description="Plot MEow learning curves against the paper and print a comparison table.")
    parser.add_argument("runs", nargs="*", default=["runs"], help="run directories, parent directories or glob patterns (default: runs)")
    parser.add_argument("--out-dir", default="docs", help="where the PNGs go (default: %(default)s)")
    parser.add_argument("--tag", default=PAPER_TAG, help="TensorBoard scalar to plot (default: %(default)s)")
    parser.add_argument("--every", help="also print each seed's value every this many steps (e.g. 50k)")
    args = parser.parse_args(argv)
    every = None
    if args.every is not None:
        try:
            every = parse_steps(args.every)
        except ValueError:
            every = 0
        if every < 1:
            fail("--every takes a positive step count such as 50000 or 50k (got %r)" % args.every)

    groups = parse_runs(find_run_dirs(args.runs))
    by_env = collections.defaultdict(list)  # env_id -> [(exp_name, [(steps, values) per seed])]
    seeds_of = {}  # (env_id, exp_name) -> the seed of each series, in order
    for (env_id, exp_name), seeds in sorted(groups.items()):
        series = []
        seeds_of[env_id, exp_name] = []
        for run in seeds.values():
            steps, values = read_scalar(run.path, args.tag)
            if len(steps):
                series.append((steps, values))
                seeds_of[env_id, exp_name].append(run.seed)
            else:
                warn("skipping %s: no %r scalar in it (yet)" % (run.path, args.tag))
        if series:
            by_env[env_id].append((exp_name, series))
    if not by_env:
        fail("none of the runs has a %r scalar" % args.tag)

    paper = load_paper()
    os.makedirs(args.out_dir, exist_ok=True)
    for env_id, env_groups in sorted(by_env.items()):
        print("wrote %s" % plot_env(env_id, env_groups, args.tag, paper, args.out_dir), file=sys.stderr)
    print(table(by_env, args.tag, paper))
    if every:
        print("\nEach seed's %s:\n" % args.tag)
        print(seed_table(by_env, seeds_of, every))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
