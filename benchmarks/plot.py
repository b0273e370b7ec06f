"""Export runs' evaluation returns to a CSV; draw the learning curves and the results table from it.

Two steps, so that anyone can redraw the figures and the table from the committed CSV alone:

1. --export reads the TensorBoard event files of the given runs (run directories, parent
   directories searched recursively, or glob patterns), as benchmarks/run_seeds.py writes them:
   WORKDIR/runs/{env_id}__{exp_name}__{seed}__{unix_time}/. It writes every `eval/return` point
   (the deterministic policy's mean test return, what the paper reports) to --csv with columns
   env, seed, step, return, commit; --commit names the code the runs were made with (they all
   come from one checkout). One experiment per file: the CSV has no exp_name column. A seed that
   was run several times counts once, with its newest run. The file is replaced only once every
   run has been read. With --update, the runs replace only their own (env, seed) pairs in the
   existing --csv and its other rows stay: seeds run on different machines, or run again, land in
   one file. With --forks, runs of several experiments (the forks of ablations/, each run with its
   own --exp-name) go to one CSV with columns env, fork, seed, step, return, commit: a run's
   `eval/return` under its exp_name, and any `eval/return_X` it also logged (both_evals.patch's
   eval/return_stochastic) under exp_name_X.

2. Without --export it reads --csv and, per environment, writes OUT_DIR/{env}_eval_return.png:
   the mean over seeds with a band of +-1 std (none where one seed has data), each seed as a
   thin line, and the paper's MEow and SAC curves as dashed lines, up to our last step. It prints
   on stdout a Markdown table: each seed and the mean +- std over seeds at each of --steps, next
   to the paper's MEow and SAC at the same steps. A cell is the evaluation logged at exactly that
   step ("–": none there; "(n=2)": only that many seeds got there). The std is the sample std
   over seeds (ddof=1). A CSV with a fork column gives, per environment, one figure
   OUT_DIR/{env}_forks.png (one curve per fork: the mean over seeds, a band of +-1 std) and a
   table of each fork's mean +- std at each of --steps, without the paper's curves.

The paper's curves, benchmarks/paper_results.csv (environment, algorithm, step, return), are
Figure 3 of Chao et al., "Maximum Entropy Reinforcement Learning via Energy-Based Normalizing
Flow" (NeurIPS 2024), every 50k steps to 1M for the five MuJoCo tasks, read by pixel from the
authors' published figure images. Each is the authors' smoothed mean over 5 seeds; the reading
error is about +-3% of the plot's y range. An empty return is a point where another curve hides
the line: the figure draws the line straight across it, the table says "hidden". These are
curves of 5-seed means: compare them with means over several seeds, not with a single run.
Beside it, benchmarks/paper_final_returns.csv holds the final returns the paper reports (after
1.5M to 5M steps, 0.5M to 1M on Isaac Gym); they are far beyond our runs and not drawn.

Example:
    python benchmarks/plot.py --export ../repro/runs --commit abc1234 --csv benchmarks/results/mujoco_300k.csv
    python benchmarks/plot.py --csv benchmarks/results/mujoco_300k.csv --out-dir docs
    python benchmarks/plot.py --steps 50k 100k 150k 200k 250k 300k   # every seed every 50k
    python benchmarks/plot.py --export ../ablation_runs/runs --forks --commit abc1234 --csv benchmarks/results/ablations_halfcheetah_100k.csv
"""
import argparse
import collections
import csv
import glob
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or available on servers
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import numpy as np
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

HERE = os.path.dirname(os.path.abspath(__file__))
PAPER_CSV = os.path.join(HERE, "paper_results.csv")
COLUMNS = ["env", "seed", "step", "return", "commit"]
FORK_COLUMNS = ["env", "fork", "seed", "step", "return", "commit"]
TAG = "eval/return"
RUN_NAME = re.compile(r"^(?P<env_id>.+?)__(?P<exp_name>.+)__(?P<seed>-?\d+)__(?P<time>\d+)$")
PAPER_COLORS = {"MEow": "deepskyblue", "SAC": "orange"}  # the paper's own colours

Run = collections.namedtuple("Run", ["env_id", "exp_name", "seed", "time", "path"])


def fail(message):
    print("error: %s" % message, file=sys.stderr)
    sys.exit(2)


def warn(message):
    print("warning: %s" % message, file=sys.stderr)


def parse_steps(text):
    """'100k' -> 100000, '1.5M' -> 1500000, '600' -> 600."""
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    try:
        steps = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        steps = 0.0
    if not (steps >= 1 and steps.is_integer()):
        fail("--steps takes positive step counts such as 100000 or 100k (got %r)" % text)
    return int(steps)


def format_steps(steps):
    for suffix, scale in (("M", 1_000_000), ("k", 1_000)):
        if steps >= scale and steps % (scale // 10) == 0:
            return ("%g" % (steps / scale)) + suffix
    return str(steps)


# --- export: TensorBoard runs -> CSV


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


def newest_runs(run_dirs, forks=False):
    """{(env_id, seed): run}, or with forks {(env_id, exp_name, seed): run}: the newest run when a seed was run again."""
    parsed = []
    for path in run_dirs:
        match = RUN_NAME.match(os.path.basename(path))
        if match:
            parsed.append(Run(match["env_id"], match["exp_name"], int(match["seed"]), int(match["time"]), path))
        else:
            warn("skipping %s: its name is not {env_id}__{exp_name}__{seed}__{time}" % path)
    if not parsed:
        fail("no run directory has a name of the form {env_id}__{exp_name}__{seed}__{time}")
    experiments = sorted({run.exp_name for run in parsed})
    if len(experiments) > 1 and not forks:
        fail("runs of several experiments (%s): export one at a time, e.g. with a pattern 'runs/*__NAME__*', "
             "or all with --forks" % ", ".join(experiments))
    runs = {}
    for run in sorted(parsed, key=lambda r: r.time):
        key = (run.env_id, run.exp_name, run.seed) if forks else (run.env_id, run.seed)
        if key in runs:
            warn("%s and %s have the same seed; using the newer one" % (runs[key].path, run.path))
        runs[key] = run
    return runs


def read_evals(path, extra_tags=False):
    """[(step, return)] sorted by step, from the run's event files in the order they were written; with
    extra_tags, {tag: [(step, return)]} of `eval/return` and every `eval/return_X` tag.

    A resumed run's writer marks the step it resumed from (a SessionLog START event at step M) and
    TensorBoard's own reader then drops every point at step >= M. That would also drop what the killed
    process logged at the checkpoint's step, before the checkpoint was taken, which the meow scripts up
    to commit b2dd171 marked as M (later ones mark that step + 1). So this keeps the points at step <= M
    and drops the later ones (the killed process's steps after its checkpoint); a step logged twice
    keeps its last value."""
    evals = collections.defaultdict(dict)  # {tag: {step: return}}
    for name in sorted(os.listdir(path)):
        if not name.startswith("events.out.tfevents."):
            continue
        for event in EventFileLoader(os.path.join(path, name)).Load():
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                for tag, points in evals.items():
                    evals[tag] = {step: value for step, value in points.items() if step <= event.step}
            for value in event.summary.value:
                if value.tag == TAG or (extra_tags and value.tag.startswith(TAG + "_")):
                    evals[value.tag][event.step] = float(tensor_util.make_ndarray(value.tensor))
    if extra_tags:
        return {tag: sorted(points.items()) for tag, points in evals.items() if points}
    return sorted(evals[TAG].items())


def run_of(row):
    """The run a CSV row belongs to: (env, seed), or (env, fork, seed) in a CSV with a fork column."""
    return tuple(row[:-4]) + (int(row[-4]),)


def kept_rows(csv_path, replaced, forks=False):
    """The rows of an existing results CSV whose run is not in `replaced`, for --update."""
    if not os.path.isfile(csv_path):
        fail("--update: no such file: %s (leave --update out to write a new one)" % csv_path)
    if read_results(csv_path)[2] != forks:  # the same checks as for plotting, before anything is written
        fail("--update: %s %s a fork column: %s --forks" % (csv_path, "has" if not forks else "lacks", "add" if not forks else "leave out"))
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [tuple(row) for row in rows if run_of(row) not in replaced]


def export(patterns, commit, csv_path, update=False, forks=False):
    rows = []
    for key, run in sorted(newest_runs(find_run_dirs(patterns), forks).items()):
        env_id, seed = key[0], key[-1]
        if forks:  # a curve per tag: eval/return under the exp_name, eval/return_X under exp_name_X
            curves = [((env_id, run.exp_name + tag[len(TAG):]), evals) for tag, evals in sorted(read_evals(run.path, extra_tags=True).items())]
        else:
            curves = [((env_id,), read_evals(run.path))]
        if not any(evals for _, evals in curves):
            warn("skipping %s: no %r scalar in it (yet)" % (run.path, TAG))
            continue
        for name, evals in curves:
            # TensorBoard keeps float32: its shortest repr is exact and short
            rows += [name + (seed, step, str(np.float32(value)), commit) for step, value in evals]
            last_step, last_value = evals[-1]
            print("%s seed %d: %d evaluations, last at %s: %.0f" % (" ".join(name), seed, len(evals), format_steps(last_step), last_value))
    if not rows:
        fail("none of the runs has a %r scalar" % TAG)
    if update:
        kept = kept_rows(csv_path, {run_of(row) for row in rows}, forks)
        print("kept %d rows of %d other runs from %s" % (len(kept), len({run_of(row) for row in kept}), csv_path))
        rows = sorted(rows + kept, key=lambda row: run_of(row) + (int(row[-3]),))
    os.makedirs(os.path.dirname(csv_path) or ".", exist_ok=True)
    with open(csv_path + ".tmp", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(FORK_COLUMNS if forks else COLUMNS)
        writer.writerows(rows)
    os.replace(csv_path + ".tmp", csv_path)  # never a half-written file in its place
    print("wrote %d rows to %s" % (len(rows), csv_path), file=sys.stderr)


# --- plot and table: CSV -> figures and Markdown


def read_results(csv_path):
    """{key: {seed: {step: return}}}, {key: set of commits} and whether the CSV has a fork column; the key
    is the env, or (env, fork) in a CSV with a fork column."""
    if not os.path.isfile(csv_path):
        fail("no such file: %s (write it with --export)" % csv_path)
    results = collections.defaultdict(lambda: collections.defaultdict(dict))
    commits = collections.defaultdict(set)
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        columns = next(reader, None)
        if columns not in (COLUMNS, FORK_COLUMNS):
            fail("%s: the first line must be %s (or %s)" % (csv_path, ",".join(COLUMNS), ",".join(FORK_COLUMNS)))
        forks = columns == FORK_COLUMNS
        for line, row in enumerate(reader, start=2):
            try:
                if len(row) != len(columns):
                    raise ValueError
                key, (seed, step, value, commit) = (tuple(row[:2]) if forks else row[0]), row[-4:]
                seed, step, value = int(seed), int(step), float(value)
            except ValueError:
                fail("%s line %d: expected %s (got %r)" % (csv_path, line, ",".join(columns), ",".join(row)))
            if not math.isfinite(value):
                fail("%s line %d: the return must be a finite number (got %r)" % (csv_path, line, row[-2]))
            if step in results[key][seed]:
                fail("%s line %d: %s seed %d has step %d twice" % (csv_path, line, " ".join(row[:-4]), seed, step))
            results[key][seed][step] = value
            commits[key].add(commit)
    if not results:
        fail("%s has no rows" % csv_path)
    return results, commits, forks


def read_paper():
    """{env: {algorithm: {step: return}}}; nan where another curve hides the line in the figure."""
    paper = collections.defaultdict(dict)
    with open(PAPER_CSV, newline="") as f:
        for row in csv.DictReader(f):
            value = float(row["return"]) if row["return"] else math.nan
            paper[row["environment"]].setdefault(row["algorithm"], {})[int(row["step"])] = value
    return paper


def mean_std(values):
    return np.mean(values), (np.std(values, ddof=1) if len(values) > 1 else 0.0)


def by_step(seeds):
    """{step: [return of each seed that was evaluated there]}."""
    points = collections.defaultdict(list)
    for evals in seeds.values():
        for step, value in evals.items():
            points[step].append(value)
    return points


def plot_env(env_id, seeds, commits, paper_curves, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for seed, evals in sorted(seeds.items()):
        ax.plot(*zip(*sorted(evals.items())), color="black", linewidth=0.6, alpha=0.4, label="ours, each seed" if seed == min(seeds) else None)
    points = by_step(seeds)
    steps = sorted(points)
    mean, std = np.array([mean_std(points[s]) for s in steps]).T
    ax.plot(steps, mean, color="black", linewidth=2, label="ours @ %s: mean ± std over seeds %s" % (", ".join(sorted(commits)), ", ".join(map(str, sorted(seeds)))))
    ax.fill_between(steps, mean - std, mean + std, color="black", alpha=0.15, linewidth=0)
    for algorithm, curve in paper_curves.items():
        visible = [(s, v) for s, v in sorted(curve.items()) if not math.isnan(v)]
        # up to the first point at or past our last step (not all 1M steps: they would squeeze our
        # curves), so that the line reaches the edge even where it is hidden in the paper's figure
        end = next((i for i, (s, _) in enumerate(visible) if s >= steps[-1]), len(visible) - 1)
        if steps[-1] >= visible[0][0]:
            ax.plot(*zip(*visible[:end + 1]), color=PAPER_COLORS.get(algorithm), linestyle="--", linewidth=1.8, label="paper %s (Fig. 3, mean of 5 seeds)" % algorithm)
    ax.set_title(env_id)
    return save_figure(fig, ax, steps[-1], "evaluation return (deterministic policy)", os.path.join(out_dir, "%s_eval_return.png" % env_id))


def save_figure(fig, ax, last_step, ylabel, path):
    """The axes' labels, grid and legend, then the PNG at `path`; returns the path."""
    ax.set_xlabel("environment steps")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_steps(int(x))))
    ax.set_xlim(0, last_step)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def mean_cell(values, n_seeds):
    if not values:
        return "–"
    mean, std = mean_std(values)
    cell = "%.0f ± %.0f" % (mean, std) if len(values) > 1 else "%.0f" % mean
    return cell if len(values) == n_seeds else "%s (n=%d)" % (cell, len(values))


def paper_cell(curve, step):
    if step not in curve:
        return "–"
    return "hidden" if math.isnan(curve[step]) else "%.0f" % curve[step]


def table(results, paper, checkpoints):
    header = ["environment", "source"] + [format_steps(c) for c in checkpoints]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    row = lambda env_id, source, cells: lines.append("| %s | %s | %s |" % (env_id, source, " | ".join(cells)))
    for env_id, seeds in sorted(results.items()):
        for seed, evals in sorted(seeds.items()):
            row(env_id, "ours, seed %d" % seed, ["%.0f" % evals[c] if c in evals else "–" for c in checkpoints])
        reached = [[evals[c] for evals in seeds.values() if c in evals] for c in checkpoints]
        row(env_id, "ours, mean ± std", [mean_cell(values, len(seeds)) for values in reached])
        for algorithm, curve in paper.get(env_id, {}).items():
            row(env_id, "paper %s (Fig. 3)" % algorithm, [paper_cell(curve, c) for c in checkpoints])
    return "\n".join(lines)


def plot_forks(env_id, forks, commits, out_dir):
    """One figure per environment for a CSV with a fork column: each fork's mean over seeds, +-1 std."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    last = 0
    for fork, seeds in sorted(forks.items()):
        points = by_step(seeds)
        steps = sorted(points)
        mean, std = np.array([mean_std(points[s]) for s in steps]).T
        line, = ax.plot(steps, mean, linewidth=2, label="%s: seeds %s" % (fork, ", ".join(map(str, sorted(seeds)))))
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        last = max(last, steps[-1])
    ax.set_title("%s: forks of meow_continuous_action.py @ %s (mean ± std over seeds)" % (env_id, ", ".join(sorted(commits))), fontsize=10)
    return save_figure(fig, ax, last, "evaluation return", os.path.join(out_dir, "%s_forks.png" % env_id))


def fork_table(results, checkpoints):
    """Markdown: per environment and fork, the mean ± std over seeds at each checkpoint."""
    header = ["environment", "fork", "seeds"] + [format_steps(c) for c in checkpoints]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (env_id, fork), seeds in sorted(results.items()):
        cells = [mean_cell([evals[c] for evals in seeds.values() if c in evals], len(seeds)) for c in checkpoints]
        lines.append("| %s | %s | %s | %s |" % (env_id, fork, " ".join(map(str, sorted(seeds))), " | ".join(cells)))
    return "\n".join(lines)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = fail  # one line on stderr, exit code 2, as for every other bad input
    parser.add_argument("--export", nargs="+", metavar="RUNS", help="write --csv from these run directories, parent directories or glob patterns")
    parser.add_argument("--commit", help="with --export: the commit the runs were made with (e.g. abc1234)")
    parser.add_argument("--update", action="store_true", help="with --export: replace only these runs (each env and seed; with --forks, env, fork and seed) in the existing --csv and keep its other rows")
    parser.add_argument("--forks", action="store_true", help="with --export: runs of several experiments (forks) in one CSV, with a fork column naming each run's exp_name")
    parser.add_argument("--csv", default="benchmarks/results/mujoco_300k.csv", help="the results CSV: written by --export, read otherwise (default: %(default)s)")
    parser.add_argument("--out-dir", default="docs", help="where the PNGs go (default: %(default)s)")
    parser.add_argument("--steps", nargs="+", default=["100k", "200k", "300k"], help="the table's columns (default: 100k 200k 300k)")
    args = parser.parse_args(argv)

    if args.export:
        if not re.fullmatch(r"[0-9a-f]{7,40}", args.commit or ""):
            fail("--export needs --commit with the runs' commit hash, 7 to 40 hex digits (got %r)" % args.commit)
        export(args.export, args.commit, args.csv, args.update, args.forks)
        return 0
    if args.commit:
        fail("--commit goes with --export (plotting takes the commit from the CSV)")
    if args.update or args.forks:
        fail("--%s goes with --export" % ("update" if args.update else "forks"))
    checkpoints = [parse_steps(text) for text in args.steps]
    results, commits, forks = read_results(args.csv)
    os.makedirs(args.out_dir, exist_ok=True)
    if forks:
        for env_id in sorted({env_id for env_id, _ in results}):
            per_fork = {fork: seeds for (env, fork), seeds in results.items() if env == env_id}
            env_commits = set().union(*(commits[env_id, fork] for fork in per_fork))
            print("wrote %s" % plot_forks(env_id, per_fork, env_commits, args.out_dir), file=sys.stderr)
        print(fork_table(results, checkpoints))
        return 0
    paper = read_paper()
    for env_id, seeds in sorted(results.items()):
        print("wrote %s" % plot_env(env_id, seeds, commits[env_id], paper.get(env_id, {}), args.out_dir), file=sys.stderr)
    print(table(results, paper, checkpoints))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
