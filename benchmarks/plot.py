"""Export runs' evaluation returns to a CSV; draw the learning curves and the results table from it.

Two steps, so that anyone can redraw the figures and the table from the committed CSV alone:

1. --export reads the TensorBoard event files of the given runs (run directories, parent
   directories searched recursively, or glob patterns), as benchmarks/run_seeds.py writes them:
   WORKDIR/runs/{env_id}__{exp_name}__{seed}__{unix_time}/. It writes every `eval/return` point
   (the deterministic policy's mean test return, what the paper reports) to --csv with columns
   env, seed, step, return, commit, cpu, variant; --commit names the code the runs were made with
   (they all come from one checkout). --tag exports another scalar; the fourth column is then named
   after it (`return` stays for an evaluation return such as the authors' Test/return), so that no
   file mixes two quantities and only returns are drawn against the paper. One experiment per file:
   the CSV has no exp_name column. A
   seed that was run several times counts once, with its newest run. The file is replaced only once
   every run has been read. With --update, the runs replace only their own (env, seed, cpu, variant)
   rows in the existing --csv and its other rows stay: seeds run on different machines, or run
   again, land in one file.

2. Without --export it reads --csv and prints on stdout a Markdown table: each seed and the
   mean +- std over seeds at each of --steps, next to the paper's MEow and SAC at the same steps.
   A cell is the evaluation logged at exactly that step ("–": none there; "(n=2)": only that many
   seeds got there, "(n=1)" for a group of one seed). The std is the sample std over seeds
   (ddof=1). With --out-dir it also writes, per environment, OUT_DIR/{env}_eval_return.png:
   for each group the mean over seeds with a 95% bootstrap band (over the two or more seeds whose
   shared evaluation steps hold the most evaluations, to the last step they share), each seed as a
   thin line, and the paper's MEow and SAC curves as dashed lines, up to our last step. A figure's
   file name holds only the environment, so several CSVs (the 300k runs, the ablations, Walker2d by
   CPU) would write the same file: no figure is written without --out-dir.

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
    python benchmarks/plot.py --steps 50k 100k 150k 200k 250k 300k   # the table only: every seed every 50k
"""
import argparse
import collections
import csv
import decimal
import glob
import math
import os
import platform
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
COLUMNS = ["env", "seed", "step", "return", "commit", "cpu", "variant"]
OLD_COLUMNS = COLUMNS[:5]  # files written before the cpu and variant columns: their runs are "ours", on an unnamed CPU
TAG = "eval/return"
RETURN = "return"
RUN_NAME = re.compile(r"^(?P<env_id>.+?)__(?P<exp_name>.+)__(?P<seed>-?\d+)__(?P<time>\d+)$")
PAPER_COLORS = {"MEow": "deepskyblue", "SAC": "orange"}  # the paper's own colours
GROUP_COLORS = ["black", "crimson", "seagreen", "purple", "saddlebrown", "darkcyan", "olive", "deeppink", "slategray", "goldenrod"]

Run = collections.namedtuple("Run", ["env_id", "exp_name", "seed", "time", "path"])


def fail(message):
    print("error: %s" % message, file=sys.stderr)
    sys.exit(2)


def warn(message):
    print("warning: %s" % message, file=sys.stderr)


def parse_steps(text):
    """'100k' -> 100000, '1.5M' -> 1500000, '600' -> 600."""
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    try:  # in decimal: 4.1 * 10^6 in floats is 4099999.9999999995
        steps = decimal.Decimal(text[:-1] if scale > 1 else text) * scale
    except decimal.InvalidOperation:
        steps = decimal.Decimal(0)
    if not (steps.is_finite() and steps >= 1 and steps == steps.to_integral_value()):
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


def newest_runs(run_dirs):
    """{(env_id, seed): run}, the newest run when a seed was run again."""
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
    if len(experiments) > 1:
        fail("runs of several experiments (%s): export one at a time, e.g. with a pattern 'runs/*__NAME__*'" % ", ".join(experiments))
    runs = {}
    for run in sorted(parsed, key=lambda r: r.time):
        key = run.env_id, run.seed
        if key in runs:
            warn("%s and %s have the same seed; using the newer one" % (runs[key].path, run.path))
        runs[key] = run
    return runs


def read_evals(path, tag=TAG):
    """[(step, return)] sorted by step, from the run's event files in the order they were written.

    A resumed run's writer marks the step it resumed from (a SessionLog START event at step M) and
    TensorBoard's own reader then drops every point at step >= M. That would also drop what the killed
    process logged at the checkpoint's step, before the checkpoint was taken, which the meow scripts up
    to commit b2dd171 marked as M (later ones mark that step + 1). So this keeps the points at step <= M
    and drops the later ones (the killed process's steps after its checkpoint); a step logged twice
    keeps its last value."""
    evals = {}
    for event in events(path):
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            evals = {step: value for step, value in evals.items() if step <= event.step}
        for value in event.summary.value:
            if value.tag == tag:
                evals[event.step] = float(tensor_util.make_ndarray(value.tensor))
    return sorted(evals.items())


def events(path):
    """Every event of the run directory's TensorBoard files, file by file in the order they were written."""
    for name in sorted(os.listdir(path)):
        if name.startswith("events.out.tfevents."):
            yield from EventFileLoader(os.path.join(path, name)).Load()


def this_cpu(cpuinfo="/proc/cpuinfo"):
    """This machine's CPU model name, as /proc/cpuinfo gives it (platform.processor() elsewhere), followed by
    " (AVX2)" where the CPU has AVX2 and not AVX-512: virtual machines give one name ("AMD EPYC") to CPUs with
    and without it, and a compiled run's roundings differ between the two (docs/reproducing.md)."""
    name, flags = None, set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name") and name is None:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    if name is None:
        return platform.processor() or "unknown"
    return name + (" (AVX2)" if "avx2" in flags and "avx512f" not in flags else "")


def value_column(tag):
    """The name of the fourth column for the scalar `tag`: `return` for an evaluation return (a tag whose last
    part is `return` or `return_*`, such as the stochastic evaluation of the Fig. 7 fork), the tag itself otherwise."""
    last = tag.rsplit("/", 1)[-1]
    return RETURN if last == RETURN or last.startswith(RETURN + "_") else tag


def header_of(quantity):
    """The first line of a results CSV whose fourth column is `quantity`."""
    return COLUMNS[:3] + [quantity] + COLUMNS[4:]


def held_value(header):
    """The fourth column's name in a results CSV's first line, or None where the line is not one."""
    return header[3] if header and len(header) == len(COLUMNS) and header == header_of(header[3]) else None


def run_key(row):
    """(env, seed, cpu, variant): one run of a results CSV, whose rows are its evaluations."""
    return row[0], int(row[1]), row[5], row[6]


def read_rows(csv_path):
    """The lines of a CSV, split; one error line for a file that is not text."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            return list(csv.reader(f))
    except UnicodeDecodeError:
        fail("%s is not a text file (UTF-8), so not a results CSV" % csv_path)


def kept_rows(csv_path, replaced, quantity):
    """The rows of an existing results CSV of `quantity` whose run is not in `replaced`, for --update."""
    if not os.path.isfile(csv_path):
        fail("--update: no such file: %s (leave --update out to write a new one)" % csv_path)
    held = held_value(next(iter(read_rows(csv_path)), None))
    if held not in (None, quantity):
        fail("--update: %s holds %s values and this export reads %s: one quantity per file" % (csv_path, held, quantity))
    read_results(csv_path, by_cpu=True, quantity=quantity)  # the same checks as for plotting, before anything is written
    rows = read_rows(csv_path)[1:]
    rows = [tuple(row) + ("", "ours")[len(row) - len(COLUMNS):] if len(row) < len(COLUMNS) else tuple(row) for row in rows]
    return [row for row in rows if run_key(row) not in replaced]


def export(patterns, commit, csv_path, update=False, cpu=None, variant="ours", tag=TAG):
    cpu = cpu or this_cpu()
    rows = []
    for (env_id, seed), run in sorted(newest_runs(find_run_dirs(patterns)).items()):
        evals = read_evals(run.path, tag)
        if not evals:
            warn("skipping %s: no %r scalar in it (yet)" % (run.path, tag))
            continue
        # TensorBoard keeps float32: its shortest repr is exact and short
        rows += [(env_id, seed, step, str(np.float32(value)), commit, cpu, variant) for step, value in evals]
        last_step, last_value = evals[-1]
        print("%s seed %d: %d %s value%s, last at %s: %.6g"
              % (env_id, seed, len(evals), tag, "" if len(evals) == 1 else "s", format_steps(last_step), last_value))
    if not rows:
        fail("none of the runs has a %r scalar" % tag)
    if update:
        kept = kept_rows(csv_path, {run_key(row) for row in rows}, value_column(tag))
        print("kept %d rows of %d other runs from %s" % (len(kept), len({run_key(row) for row in kept}), csv_path))
        rows = sorted(rows + kept, key=lambda row: (row[0], row[6], row[5], int(row[1]), int(row[2])))
    os.makedirs(os.path.dirname(csv_path) or ".", exist_ok=True)
    with open(csv_path + ".tmp", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header_of(value_column(tag)))
        writer.writerows(rows)
    os.replace(csv_path + ".tmp", csv_path)  # never a half-written file in its place
    print("wrote %d rows to %s" % (len(rows), csv_path), file=sys.stderr)


# --- plot and table: CSV -> figures and Markdown


def read_results(csv_path, by_cpu=False, quantity=RETURN):
    """{env: {group: {seed: {step: value}}}} and {env: {group: set of commits}} from a CSV whose fourth
    column is `quantity`. A group is the variant (the code that made the runs), with the CPU model when by_cpu."""
    if not os.path.isfile(csv_path):
        fail("no such file: %s (write it with --export)" % csv_path)
    results = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(dict)))
    commits = collections.defaultdict(lambda: collections.defaultdict(set))
    cpus = collections.defaultdict(set)
    rows = read_rows(csv_path)
    header = rows[0] if rows else None
    columns, held = header_of(quantity), held_value(header)
    if held not in (None, quantity):
        fail("%s holds %s values, not evaluation returns: the table and figures are of returns" % (csv_path, held))
    if header not in (columns, OLD_COLUMNS if quantity == RETURN else None):
        fail("%s: the first line must be %s" % (csv_path, ",".join(columns)))
    for line, row in enumerate(rows[1:], start=2):
        try:
            env_id, seed, step, value, commit, cpu, variant = row + ["", "ours"][len(row) - len(COLUMNS):] if len(header) < len(COLUMNS) else row
            seed, step, value = int(seed), int(step), float(value)
        except ValueError:
            fail("%s line %d: expected %s (got %r)" % (csv_path, line, ",".join(header), ",".join(row)))
        if not math.isfinite(value):
            fail("%s line %d: the %s must be a finite number (got %r)" % (csv_path, line, quantity, row[3]))
        group = variant + (", %s" % (cpu or "unknown CPU") if by_cpu else "")
        cpus[env_id, group, seed].add(cpu)
        if len(cpus[env_id, group, seed]) > 1:
            fail("%s line %d: %s seed %d ran on several CPUs (%s): split them with --by-cpu"
                 % (csv_path, line, env_id, seed, ", ".join(sorted(cpus[env_id, group, seed]))))
        if step in results[env_id][group][seed]:
            fail("%s line %d: %s seed %d has step %d twice" % (csv_path, line, env_id, seed, step))
        results[env_id][group][seed][step] = value
        commits[env_id][group].add(commit)
    if not results:
        fail("%s has no rows" % csv_path)
    return results, commits


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


def bootstrap_ci(values, level=0.95, resamples=10_000):
    """Percentile bootstrap interval of the mean over seeds. The generator is fixed, so one CSV always
    gives the same figures and table."""
    values = np.asarray(values, dtype=float)
    means = values[np.random.default_rng(0).integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return tuple(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


def common_steps(seeds):
    """{step: [one value per seed]} at the steps every seed has reached: a mean over the seeds that
    happen to be that far would jump where a seed stops (runs still under way have different lengths)."""
    shared = set.intersection(*(set(evals) for evals in seeds.values()))
    return {step: [evals[step] for _, evals in sorted(seeds.items())] for step in sorted(shared)}


def meaned_seeds(seeds):
    """The seeds a group's mean line covers: of the sets of two or more seeds that reach a step (one
    set per seed's last step), the one whose shared steps hold the most evaluations, ties to the
    larger set. A mean over every seed would stop where the shortest run stops; one over the seeds
    that went furthest may leave out all but two."""
    if len(seeds) < 2:
        return seeds
    candidates = []
    for last in {max(evals) for evals in seeds.values()}:
        reaching = {seed: evals for seed, evals in seeds.items() if max(evals) >= last}
        if len(reaching) > 1:
            candidates.append((len(reaching) * len(common_steps(reaching)), len(reaching), reaching))
    return max(candidates, key=lambda c: c[:2])[2]


def plot_env(env_id, groups, commits, paper_curves, out_dir):
    """One figure per task: for each group the seeds' mean with a 95% bootstrap band, as the paper
    draws its Figure 3, and each seed as a thin line; the paper's curves dashed. The mean covers the
    seeds meaned_seeds picks, up to the last step they all reached; the legend names the others and
    their last step."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    last = 0
    for i, (group, seeds) in enumerate(sorted(groups.items())):
        # past the palette, the colours come round again with another line style (dashes are the paper's)
        color, style = GROUP_COLORS[i % len(GROUP_COLORS)], ["-", ":", "-."][i // len(GROUP_COLORS) % 3]
        for seed, evals in sorted(seeds.items()):
            ax.plot(*zip(*sorted(evals.items())), color=color, linestyle=style, linewidth=0.8, alpha=0.5)
        group_last = max(max(evals) for evals in seeds.values())
        last = max(last, group_last)
        meaned = meaned_seeds(seeds)
        by_step = common_steps(meaned)
        if not by_step:
            warn("%s, %s: its seeds share no evaluation step, so no mean is drawn" % (env_id, group))
            continue
        steps = sorted(by_step)
        reach = "" if steps[-1] == group_last else " to %s" % format_steps(steps[-1])
        behind = "".join("; seed %s to %s" % (seed, format_steps(max(evals))) for seed, evals in sorted(seeds.items()) if seed not in meaned)
        what = ("mean of seeds %s%s, 95%% bootstrap band%s" % (", ".join(map(str, sorted(meaned))), reach, behind) if len(seeds) > 1
                else "seed %s" % next(iter(seeds)))
        ax.plot(steps, [np.mean(by_step[s]) for s in steps], color=color, linestyle=style, linewidth=2, label="%s @ %s: %s" % (group, ", ".join(sorted(commits[group])), what))
        if len(meaned) > 1:
            low, high = np.array([bootstrap_ci(by_step[s]) for s in steps]).T
            ax.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
    for algorithm, curve in paper_curves.items():
        visible = [(s, v) for s, v in sorted(curve.items()) if not math.isnan(v)]
        # up to the first point at or past our last step (not all 1M steps: they would squeeze our
        # curves), so that the line reaches the edge even where it is hidden in the paper's figure
        end = next((i for i, (s, _) in enumerate(visible) if s >= last), len(visible) - 1)
        if last >= visible[0][0]:
            ax.plot(*zip(*visible[:end + 1]), color=PAPER_COLORS.get(algorithm), linestyle="--", linewidth=1.8, label="paper %s (Fig. 3, mean of 5 seeds)" % algorithm)
    ax.set_title(env_id)
    ax.set_xlabel("environment steps")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_steps(int(x))))
    ax.set_xlim(0, last)
    ax.set_ylabel("evaluation return (deterministic policy)")
    ax.grid(alpha=0.3)
    entries = len(ax.get_legend_handles_labels()[0])
    if entries > 3:  # below the axes, where it hides no curve: the figure grows by its height
        fig.set_size_inches(7, 4.5 + 0.13 * entries)
        fig.set_layout_engine("constrained")
        fig.legend(fontsize=7, loc="outside lower center")
    else:
        if entries:
            ax.legend(fontsize=7)
        fig.tight_layout()
    path = os.path.join(out_dir, "%s_eval_return.png" % env_id)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def counted(cell, values, n_seeds):
    return cell if len(values) == n_seeds > 1 else "%s (n=%d)" % (cell, len(values))  # one seed is no mean: say so


def mean_cell(values, n_seeds):
    if not values:
        return "–"
    mean, std = mean_std(values)
    return counted("%.0f ± %.0f" % (mean, std) if len(values) > 1 else "%.0f" % mean, values, n_seeds)


def ci_cell(values, n_seeds):
    if len(values) < 2:
        return "–"
    low, high = bootstrap_ci(values)
    return counted("%.0f [%.0f, %.0f]" % (np.mean(values), low, high), values, n_seeds)


def paper_cell(curve, step):
    if step not in curve:
        return "–"
    return "hidden" if math.isnan(curve[step]) else "%.0f" % curve[step]


def above_cell(seeds, above, step):
    """How many seeds had an evaluation above `above` at or before `step`, of the seeds known there: those
    that reached the step or passed `above` before it. A run short of the step (stopped or still running)
    that has not passed `above` is counted neither way; the cell says how many such runs there are: "3 of 3 (2 short)"."""
    passed = [any(v > above for s, v in evals.items() if s <= step) for evals in seeds.values()]
    known = sum(p or max(evals) >= step for p, evals in zip(passed, seeds.values()))
    short = " (%d short)" % (len(seeds) - known) if known < len(seeds) else ""
    return ("%d of %d" % (sum(passed), known) if known else "–") + short


def table(results, paper, checkpoints, summary=False, ci=False, above=None):
    """The Markdown table: per task and group each seed (not with `summary`), the mean ± sample std over
    seeds, with `ci` the mean and its 95% bootstrap interval, with `above` how many seeds had an
    evaluation above that return at or before each step; then the paper's curves."""
    header = ["environment", "source"] + [format_steps(c) for c in checkpoints]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    row = lambda env_id, source, cells: lines.append("| %s | %s | %s |" % (env_id, source, " | ".join(cells)))
    for env_id, groups in sorted(results.items()):
        for group, seeds in sorted(groups.items()):
            if not summary:
                for seed, evals in sorted(seeds.items()):
                    row(env_id, "%s, seed %d" % (group, seed), ["%.0f" % evals[c] if c in evals else "–" for c in checkpoints])
            reached = [[evals[c] for evals in seeds.values() if c in evals] for c in checkpoints]
            row(env_id, "%s, mean ± std" % group, [mean_cell(values, len(seeds)) for values in reached])
            if ci:
                row(env_id, "%s, mean [95%% bootstrap CI]" % group, [ci_cell(values, len(seeds)) for values in reached])
            if above is not None:
                row(env_id, "%s, seeds above %g by then" % (group, above), [above_cell(seeds, above, c) for c in checkpoints])
        for algorithm, curve in paper.get(env_id, {}).items():
            row(env_id, "paper %s (Fig. 3)" % algorithm, [paper_cell(curve, c) for c in checkpoints])
    return "\n".join(lines)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = fail  # one line on stderr, exit code 2, as for every other bad input
    parser.add_argument("--export", nargs="+", metavar="RUNS", help="write --csv from these run directories, parent directories or glob patterns")
    parser.add_argument("--commit", help="with --export: the commit the runs were made with (e.g. abc1234)")
    parser.add_argument("--update", action="store_true", help="with --export: replace only these runs (env, seed, cpu, variant) in the existing --csv and keep its other rows")
    parser.add_argument("--cpu", help="with --export: the CPU model the runs ran on (default: this machine's, %r)" % this_cpu())
    parser.add_argument("--variant", help="with --export: names the code that made the runs, e.g. a fork or another implementation (default: ours)")
    parser.add_argument("--tag", help="with --export: the evaluation scalar to read (default: %s; the authors' MEow script logs Test/return)" % TAG)
    parser.add_argument("--csv", default="benchmarks/results/mujoco_300k.csv", help="the results CSV: written by --export, read otherwise (default: %(default)s)")
    parser.add_argument("--out-dir", help="write one figure per environment, OUT_DIR/{env}_eval_return.png (default: none, the table only)")
    parser.add_argument("--steps", nargs="+", help="the table's columns (default: 100k 200k 300k)")
    parser.add_argument("--by-cpu", action="store_true", help="one group per CPU model within each variant (figures and table)")
    parser.add_argument("--summary", action="store_true", help="the table without the per-seed rows")
    parser.add_argument("--ci", action="store_true", help="the table also gives each mean's 95%% bootstrap interval")
    parser.add_argument("--above", type=float, metavar="RETURN", help="the table also counts the seeds with an evaluation above RETURN by each step")
    args = parser.parse_args(argv)

    if args.export:
        for flag in ("out_dir", "steps", "by_cpu", "summary", "ci", "above"):
            if getattr(args, flag) is not None and getattr(args, flag) is not False:
                fail("--%s goes with plotting, not with --export (plot the CSV in a second command)" % flag.replace("_", "-"))
        if not re.fullmatch(r"[0-9a-f]{7,40}", args.commit or ""):
            fail("--export needs --commit with the runs' commit hash, 7 to 40 hex digits (got %r)" % args.commit)
        export(args.export, args.commit, args.csv, args.update, args.cpu, args.variant or "ours", args.tag or TAG)
        return 0
    for flag in ("cpu", "tag", "variant"):
        if getattr(args, flag):
            fail("--%s goes with --export" % flag)
    if args.commit:
        fail("--commit goes with --export (plotting takes the commit from the CSV)")
    if args.update:
        fail("--update goes with --export")
    checkpoints = [parse_steps(text) for text in args.steps or ["100k", "200k", "300k"]]
    results, commits = read_results(args.csv, args.by_cpu)
    paper = read_paper()
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        for env_id, groups in sorted(results.items()):
            print("wrote %s" % plot_env(env_id, groups, commits[env_id], paper.get(env_id, {}), args.out_dir), file=sys.stderr)
    print(table(results, paper, checkpoints, args.summary, args.ci, args.above))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
