"""End-to-end tests of the benchmarks/ tools on tiny real runs (speed is printed by the speed benchmarks, never asserted).

Every tool runs as a subprocess in a temporary directory, so nothing is written to the repository;
plot.py's many bad-input cases run in-process (a subprocess each would take a second).
"""
import csv
import itertools
import math
import os
import platform
import re
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS)
import plot  # noqa: E402  (benchmarks/ is not a package)
# a few hundred steps: two evaluations (at 200 and 400), and some updates after learning starts
TINY = ["--total-timesteps", "400", "--learning-starts", "200", "--eval-frequency", "200", "--eval-episodes", "1", "--batch-size", "32", "--buffer-size", "1000"]
# one thread per run: on a loaded 2-core machine torch's spin-waiting threads make tiny runs ~10x slower
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run_tool(tool, args, cwd):
    return subprocess.run([sys.executable, os.path.join(BENCHMARKS, tool), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def evals(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars("eval/return")}


def markdown_rows(text):
    """The table printed by plot.py as a list of {column: cell} dicts."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = lambda line: [cell.strip() for cell in line.strip("|").split("|")]
    header = split(lines[0])
    return header, [dict(zip(header, split(line))) for line in lines[2:]]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two seeds of Hopper trained once, 2 jobs at a time, by run_seeds.py."""
    workdir = tmp_path_factory.mktemp("seeds")
    result = run_tool("run_seeds.py", ["--envs", "Hopper-v4", "--seeds", "1", "2", "--jobs", "2", "--", *TINY], workdir)
    return workdir, result


def test_run_seeds_trains_every_seed(tiny_runs):
    workdir, result = tiny_runs
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2/2 jobs succeeded" in result.stdout
    runs = sorted(os.listdir(workdir / "runs"))
    assert [name.split("__")[:3] for name in runs] == [["Hopper-v4", "meow_continuous_action", "1"], ["Hopper-v4", "meow_continuous_action", "2"]]
    for name in runs:
        assert sorted(evals(workdir / "runs" / name)) == [200, 400]
    for seed in (1, 2):
        log = (workdir / "logs" / ("Hopper-v4__meow_continuous_action__%d.log" % seed)).read_text()
        assert "--seed %d" % seed in log and "step 400/400" in log


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def assert_png(path):
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (840, 540)  # IHDR: 7 x 4.5 inches at 120 dpi
    assert len(png) > 10_000  # curves and legend, not an empty canvas


def test_export_then_plot_the_runs_of_run_seeds(tiny_runs):
    workdir, _ = tiny_runs
    result = run_tool("plot.py", ["--export", "runs", "--commit", "abc1234", "--csv", "results/tiny.csv"], workdir)
    assert result.returncode == 0, result.stderr
    expected = [plot.COLUMNS]
    for seed in (1, 2):
        (name,) = [n for n in os.listdir(workdir / "runs") if n.split("__")[2] == str(seed)]
        expected += [["Hopper-v4", str(seed), str(step), str(np.float32(value)), "abc1234", plot.this_cpu(), "ours"]
                     for step, value in sorted(evals(workdir / "runs" / name).items())]
    assert read_csv(workdir / "results" / "tiny.csv") == expected
    assert len(expected) == 5  # two seeds, evaluated at 200 and 400

    result = run_tool("plot.py", ["--csv", "results/tiny.csv", "--out-dir", "figs", "--steps", "200", "400"], workdir)
    assert result.returncode == 0, result.stderr
    assert os.listdir(workdir / "figs") == ["Hopper-v4_eval_return.png"]
    assert_png(workdir / "figs" / "Hopper-v4_eval_return.png")
    header, rows = markdown_rows(result.stdout)
    assert header == ["environment", "source", "200", "400"]
    for seed in (1, 2):
        (row,) = [r for r in rows if r["source"] == "ours, seed %d" % seed]
        assert [row["200"], row["400"]] == ["%.0f" % float(r[3]) for r in expected if r[1] == str(seed)]
    assert [r["200"] for r in rows if r["source"].startswith("paper")] == ["–", "–"]  # the paper's curves start at 50k


def test_the_cpu_column_tells_an_avx2_cpu_from_an_avx512_one_of_the_same_name(tmp_path):
    info = tmp_path / "cpuinfo"
    for flags, expected in (("fpu avx avx2 fma", "AMD EPYC (AVX2)"), ("fpu avx avx2 fma avx512f avx512bw", "AMD EPYC"), ("fpu sse2", "AMD EPYC")):
        info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: %s\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: %s\n" % (flags, flags))
        assert plot.this_cpu(str(info)) == expected
    info.write_text("processor\t: 0\n")
    assert plot.this_cpu(str(info)) == (platform.processor() or "unknown")


def test_export_reads_the_newest_run_of_each_seed(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    def write_run(name, points):
        writer = SummaryWriter(str(tmp_path / "runs" / name))
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n|seed|1|")
        for step, value in points:
            writer.add_scalar("eval/return", value, step)
            writer.add_scalar("charts/episodic_return", -1.0, step)  # another tag, not exported
        writer.close()

    write_run("Hopper-v4__meow__2__100", [(10000, 999.0)])  # seed 2 run again later: this one is left out
    write_run("Hopper-v4__meow__2__200", [(10000, 250.25), (20000, 700.5)])
    # a resumed run logs the steps since its checkpoint again: the last value counts
    write_run("Hopper-v4__meow__1__300", [(10000, 100.0), (20000, 1.0), (20000, 512.125), (30000, 1234.5678)])
    write_run("Walker2d-v4__meow__1__300", [(10000, -3.5)])
    result = run_tool("plot.py", ["--export", "runs/*", "--commit", "0123abcd", "--csv", "out.csv"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "same seed; using the newer one" in result.stderr
    assert "Hopper-v4 seed 1: 3 eval/return values, last at 30k: 1234.57" in result.stdout
    assert "Walker2d-v4 seed 1: 1 eval/return value, last at 10k: -3.5" in result.stdout
    here = [plot.this_cpu(), "ours"]
    assert read_csv(tmp_path / "out.csv") == [
        plot.COLUMNS,
        ["Hopper-v4", "1", "10000", "100.0", "0123abcd"] + here,
        ["Hopper-v4", "1", "20000", "512.125", "0123abcd"] + here,
        ["Hopper-v4", "1", "30000", "1234.5677", "0123abcd"] + here,  # float32, as TensorBoard stores it
        ["Hopper-v4", "2", "10000", "250.25", "0123abcd"] + here,
        ["Hopper-v4", "2", "20000", "700.5", "0123abcd"] + here,
        ["Walker2d-v4", "1", "10000", "-3.5", "0123abcd"] + here,
    ]

    # runs of two experiments cannot share one CSV (it has no experiment column): the old file stays
    write_run("Hopper-v4__sac__3__400", [(10000, 1.0)])
    before = (tmp_path / "out.csv").read_bytes()
    result = run_tool("plot.py", ["--export", "runs", "--commit", "0123abcd", "--csv", "out.csv"], tmp_path)
    assert result.returncode == 2 and result.stderr == "error: runs of several experiments (meow, sac): export one at a time, e.g. with a pattern 'runs/*__NAME__*'\n"
    assert (tmp_path / "out.csv").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.csv", "runs"]


def test_export_keeps_what_a_resumed_run_logged_before_its_checkpoint_and_drops_what_came_after(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    def write(run, points, purge_step=None):
        writer = SummaryWriter(str(tmp_path / "runs" / run), purge_step=purge_step)
        for step, value in points:
            writer.add_scalar("eval/return", value, step)
        writer.close()
        time.sleep(1.1)  # the event file's name holds the second it was opened: one file per second

    # checkpoints at 20k; the first process evaluated at 20k before it, then at 30k, and was killed
    for run, mark in (("Hopper-v4__meow__1__100", 20000), ("Hopper-v4__meow__2__100", 20001)):  # old and new resume marks
        write(run, [(10000, 1.0), (20000, 2.0), (30000, 3.0)])
        write(run, [], purge_step=mark)  # resumed and killed again before its next evaluation
        write(run, [(30000, 33.0), (40000, 44.0)], purge_step=mark)
    write("Walker2d-v4__meow__1__100", [(10000, 1.0), (20000, 2.0), (30000, 3.0)])
    write("Walker2d-v4__meow__1__100", [], purge_step=20000)  # resumed, not yet evaluated: 30k is stale
    result = run_tool("plot.py", ["--export", "runs", "--commit", "0123abcd", "--csv", "out.csv"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [tuple(row[:4]) for row in read_csv(tmp_path / "out.csv")[1:]]
    assert rows == [("Hopper-v4", seed, str(step), value) for seed in "12"
                    for step, value in ((10000, "1.0"), (20000, "2.0"), (30000, "33.0"), (40000, "44.0"))] + [
        ("Walker2d-v4", "1", "10000", "1.0"), ("Walker2d-v4", "1", "20000", "2.0")]


def test_export_update_replaces_only_the_seeds_it_exports(tmp_path, monkeypatch, capsys):
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.chdir(tmp_path)
    writer = SummaryWriter(str(tmp_path / "runs" / "Hopper-v4__meow__2__100"))  # seed 2 run again elsewhere
    for step, value in ((10000, 7.5), (20000, 8.5)):
        writer.add_scalar("eval/return", value, step)
    writer.close()
    with pytest.raises(SystemExit) as exit:  # nothing to update: an error, and no file appears
        plot.main(["--export", "runs", "--commit", "bbbbbbb", "--csv", "out.csv", "--update"])
    assert exit.value.code == 2 and capsys.readouterr().err.startswith("error: --update: no such file: out.csv")
    assert sorted(os.listdir(tmp_path)) == ["runs"]

    # a file of the old format (no cpu and variant columns): its rows come back as "ours" on an unnamed CPU
    old = [["env", "seed", "step", "return", "commit"],
           ["Hopper-v4", "1", "10000", "1.0", "aaaaaaa"], ["Hopper-v4", "1", "20000", "2.0", "aaaaaaa"],
           ["Hopper-v4", "2", "10000", "3.0", "aaaaaaa"], ["Hopper-v4", "2", "20000", "4.0", "aaaaaaa"], ["Hopper-v4", "2", "30000", "5.0", "aaaaaaa"],
           ["Walker2d-v4", "2", "10000", "6.0", "aaaaaaa"]]
    with open("out.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(old)
    args = ["--export", "runs", "--commit", "bbbbbbb", "--csv", "out.csv", "--update", "--cpu", "AMD EPYC"]
    assert plot.main(args) == 0
    assert "kept 6 rows of 3 other runs from out.csv" in capsys.readouterr().out
    # the same seed on another CPU is another run: it is added, and the old seed-2 rows stay
    new = [["Hopper-v4", "2", "10000", "7.5", "bbbbbbb", "AMD EPYC", "ours"], ["Hopper-v4", "2", "20000", "8.5", "bbbbbbb", "AMD EPYC", "ours"]]
    assert read_csv(tmp_path / "out.csv") == [plot.COLUMNS] + [row + ["", "ours"] for row in old[1:6]] + new + [old[6] + ["", "ours"]]
    writer = SummaryWriter(str(tmp_path / "runs" / "Hopper-v4__meow__2__200"))  # and again on the same CPU
    writer.add_scalar("eval/return", 9.5, 10000)
    writer.close()
    assert plot.main(args) == 0
    assert "kept 6 rows of 3 other runs from out.csv" in capsys.readouterr().out
    # the old seed-2 rows of that CPU all go (its 20k included); the other runs keep their rows and their commit
    assert read_csv(tmp_path / "out.csv") == [plot.COLUMNS] + [row + ["", "ours"] for row in old[1:6]] + [
        ["Hopper-v4", "2", "10000", "9.5", "bbbbbbb", "AMD EPYC", "ours"], old[6] + ["", "ours"]]


def test_export_names_the_cpu_the_variant_and_reads_another_tag(tmp_path, monkeypatch, capsys):
    """The authors' script logs its evaluation as Test/return; --variant and --cpu label the runs."""
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.chdir(tmp_path)
    writer = SummaryWriter(str(tmp_path / "runs" / "Walker2d-v4__meow_continuous_action__1__100"))
    for step, value in ((10000, 5.0), (20000, 1600.0)):
        writer.add_scalar("Test/return", value, step)
    writer.add_scalar("eval/return", -1.0, 10000)  # not the tag asked for
    writer.close()
    assert plot.main(["--export", "runs", "--commit", "cccccccc", "--csv", "a.csv", "--tag", "Test/return", "--variant", "authors", "--cpu", "Intel Xeon"]) == 0
    assert "Walker2d-v4 seed 1: 2 Test/return values, last at 20k: 1600\n" in capsys.readouterr().out
    assert read_csv(tmp_path / "a.csv") == [plot.COLUMNS, ["Walker2d-v4", "1", "10000", "5.0", "cccccccc", "Intel Xeon", "authors"],
                                            ["Walker2d-v4", "1", "20000", "1600.0", "cccccccc", "Intel Xeon", "authors"]]
    assert plot.main(["--export", "runs", "--commit", "cccccccc", "--csv", "b.csv"]) == 0
    assert read_csv(tmp_path / "b.csv")[1] == ["Walker2d-v4", "1", "10000", "-1.0", "cccccccc", plot.this_cpu(), "ours"]
    capsys.readouterr()


def test_a_scalar_other_than_a_return_gets_its_own_column_and_never_joins_a_file_of_returns(tmp_path, monkeypatch, capsys):
    """--tag bias/normalised names the fourth column after the tag: --update refuses to mix it into a file of
    evaluation returns (and the reverse), and the table and figures, which set returns against the paper's,
    refuse the file; each with one error line and the file left as it was."""
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.chdir(tmp_path)
    writer = SummaryWriter(str(tmp_path / "runs" / "Walker2d-v4__meow_continuous_action__1__100"))
    for step, (ret, bias) in ((10000, (300.0, 0.5)), (20000, (1600.0, -0.25))):
        writer.add_scalar("eval/return", ret, step)
        writer.add_scalar("bias/normalised", bias, step)
    writer.close()
    assert plot.main(["--export", "runs", "--commit", "cccccccc", "--csv", "bias.csv", "--tag", "bias/normalised", "--cpu", "AMD EPYC"]) == 0
    assert plot.main(["--export", "runs", "--commit", "cccccccc", "--csv", "returns.csv", "--cpu", "AMD EPYC"]) == 0
    assert read_csv(tmp_path / "bias.csv") == [["env", "seed", "step", "bias/normalised", "commit", "cpu", "variant"],
                                               ["Walker2d-v4", "1", "10000", "0.5", "cccccccc", "AMD EPYC", "ours"],
                                               ["Walker2d-v4", "1", "20000", "-0.25", "cccccccc", "AMD EPYC", "ours"]]
    assert read_csv(tmp_path / "returns.csv")[0] == plot.COLUMNS
    assert [plot.value_column(tag) for tag in ("Test/return", "eval/return_stochastic", "bias/soft_return", "charts/episodic_return")] == [
        "return", "return", "bias/soft_return", "charts/episodic_return"]
    # the same quantity updates as before
    assert plot.main(["--export", "runs", "--commit", "dddddddd", "--csv", "bias.csv", "--tag", "bias/normalised", "--cpu", "AMD EPYC", "--update"]) == 0
    assert read_csv(tmp_path / "bias.csv")[1][4] == "dddddddd"
    capsys.readouterr()
    before = {name: (tmp_path / name).read_text() for name in ("bias.csv", "returns.csv")}
    cases = [
        (["--export", "runs", "--commit", "eeeeeee", "--csv", "returns.csv", "--tag", "bias/normalised", "--update"],
         "error: --update: returns.csv holds return values and this export reads bias/normalised: one quantity per file"),
        (["--export", "runs", "--commit", "eeeeeee", "--csv", "bias.csv", "--update"],
         "error: --update: bias.csv holds bias/normalised values and this export reads return: one quantity per file"),
        (["--csv", "bias.csv"], "error: bias.csv holds bias/normalised values, not evaluation returns: the table and figures are of returns"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit:
            plot.main(args)
        out, err = capsys.readouterr()
        assert exit.value.code == 2 and err == message + "\n", (args, err)
        assert {name: (tmp_path / name).read_text() for name in before} == before
        assert sorted(os.listdir(tmp_path)) == ["bias.csv", "returns.csv", "runs"]


def test_table_by_cpu_gives_bootstrap_intervals_and_counts_the_seeds_above_a_return(tmp_path, capsys):
    rows = [plot.COLUMNS]
    for cpu, seed, values in (("AMD", 1, (400, 2000)), ("AMD", 2, (600, 1400)), ("Intel", 1, (300, 500)), ("Intel", 2, (1600, 700))):
        rows += [["Walker2d-v4", str(seed), str(step), str(value), "abc1234", cpu, "ours"] for step, value in zip((100000, 200000), values)]
    with open(tmp_path / "w.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(SystemExit):  # seed 1 ran on two CPUs: they are not one run
        plot.main(["--csv", str(tmp_path / "w.csv"), "--out-dir", str(tmp_path / "figs"), "--steps", "100k", "200k"])
    assert "error: %s line 6: Walker2d-v4 seed 1 ran on several CPUs (AMD, Intel): split them with --by-cpu" % (tmp_path / "w.csv") in capsys.readouterr().err
    assert plot.main(["--csv", str(tmp_path / "w.csv"), "--out-dir", str(tmp_path / "figs"), "--steps", "100k", "200k", "--by-cpu", "--ci", "--above", "1500", "--summary"]) == 0
    header, table = markdown_rows(capsys.readouterr().out)
    # two seeds: the bootstrap means are a, (a+b)/2 and b with probabilities 1/4, 1/2, 1/4, so the 95%
    # interval is [min, max]; "above 1500 by then" counts a seed once it has passed 1500 at or before the step
    assert [[row[c] for c in header[1:]] for row in table if row["environment"] == "Walker2d-v4" and row["source"].startswith("ours")] == [
        ["ours, AMD, mean ± std", "500 ± 141", "1700 ± 424"],
        ["ours, AMD, mean [95% bootstrap CI]", "500 [400, 600]", "1700 [1400, 2000]"],
        ["ours, AMD, seeds above 1500 by then", "0 of 2", "1 of 2"],
        ["ours, Intel, mean ± std", "950 ± 919", "600 ± 141"],
        ["ours, Intel, mean [95% bootstrap CI]", "950 [300, 1600]", "600 [500, 700]"],
        ["ours, Intel, seeds above 1500 by then", "1 of 2", "1 of 2"],
    ]
    assert sorted(os.listdir(tmp_path / "figs")) == ["Walker2d-v4_eval_return.png"]


def test_seeds_above_a_return_counts_only_the_seeds_known_at_each_step(tmp_path, capsys):
    """A run still short of a step is left out of that step's count unless it has already passed the return;
    the cell says how many were left out."""
    runs = {1: {100000: 400, 200000: 2000}, 2: {100000: 1600}, 3: {100000: 300}}  # seeds 2 and 3 are still running
    rows = [plot.COLUMNS] + [["Walker2d-v4", str(seed), str(step), str(value), "abc1234", "AMD", "ours"]
                             for seed, evals in runs.items() for step, value in evals.items()]
    with open(tmp_path / "w.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    assert plot.main(["--csv", str(tmp_path / "w.csv"), "--out-dir", str(tmp_path / "figs"), "--steps", "100k", "200k", "300k", "--above", "1500", "--summary"]) == 0
    header, table = markdown_rows(capsys.readouterr().out)
    (counts,) = [row for row in table if row["source"] == "ours, seeds above 1500 by then"]
    assert [counts[c] for c in header[2:]] == ["1 of 3", "2 of 2 (1 short)", "2 of 2 (1 short)"]


def test_plot_rebuilds_table_and_figures_from_the_csv_alone(tmp_path):
    result = run_tool("plot.py", ["--csv", os.path.join(ROOT, "tests", "data", "results_2envs_2seeds.csv"), "--out-dir", "figs"], tmp_path)
    assert result.returncode == 0, result.stderr
    header, rows = markdown_rows(result.stdout)
    assert header == ["environment", "source", "100k", "200k", "300k"]
    table = [[row[column] for column in header] for row in rows]
    # the means and sample stds (ddof=1: |a - b| / sqrt(2) for two seeds) worked out by hand
    assert table == [
        ["HalfCheetah-v4", "ours, seed 1", "5413", "6500", "7250"],
        ["HalfCheetah-v4", "ours, seed 2", "5101", "6310", "–"],
        # (5412.7 + 5101.1) / 2 = 5256.9, 311.6 / 1.4142 = 220.3; 6405, 190 / 1.4142 = 134.4; seed 2 stopped at 200k
        ["HalfCheetah-v4", "ours, mean ± std", "5257 ± 220", "6405 ± 134", "7250 (n=1)"],
        ["HalfCheetah-v4", "paper MEow (Fig. 3)", "5982", "7500", "8559"],
        ["HalfCheetah-v4", "paper SAC (Fig. 3)", "4818", "7112", "8100"],
        ["Walker2d-v4", "ours, seed 1", "812", "1491", "2400"],
        ["Walker2d-v4", "ours, seed 2", "640", "1103", "2050"],
        # 726.3, 172.2 / 1.4142 = 121.8; 1296.95, 387.3 / 1.4142 = 273.9; 2225, 350 / 1.4142 = 247.5
        ["Walker2d-v4", "ours, mean ± std", "726 ± 122", "1297 ± 274", "2225 ± 247"],
        # where another curve hides the line in the paper's figure, there is no number to give
        ["Walker2d-v4", "paper MEow (Fig. 3)", "hidden", "1256", "hidden"],
        ["Walker2d-v4", "paper SAC (Fig. 3)", "hidden", "776", "2273"],
    ]
    assert sorted(os.listdir(tmp_path / "figs")) == ["HalfCheetah-v4_eval_return.png", "Walker2d-v4_eval_return.png"]
    for name in os.listdir(tmp_path / "figs"):
        assert_png(tmp_path / "figs" / name)

    result = run_tool("plot.py", ["--csv", os.path.join(ROOT, "tests", "data", "results_2envs_2seeds.csv"), "--out-dir", "figs", "--steps", "50k", "1M"], tmp_path)
    assert result.returncode == 0, result.stderr
    header, rows = markdown_rows(result.stdout)
    assert header == ["environment", "source", "50k", "1M"]
    by_source = {(row["environment"], row["source"]): [row["50k"], row["1M"]] for row in rows}
    assert by_source["Walker2d-v4", "ours, mean ± std"] == ["302 (n=1)", "–"]
    assert by_source["HalfCheetah-v4", "ours, seed 1"] == ["–", "–"]
    assert by_source["Walker2d-v4", "paper MEow (Fig. 3)"] == ["332", "4814"]
    assert by_source["HalfCheetah-v4", "paper SAC (Fig. 3)"] == ["1959", "10994"]


def test_plot_without_out_dir_prints_the_table_and_writes_no_figure_and_one_seed_is_no_mean(tmp_path, monkeypatch, capsys):
    # figure names hold only the environment: a default directory would let one CSV overwrite another's figures
    csv_path = tmp_path / "one_seed.csv"
    with open(os.path.join(ROOT, "tests", "data", "results_2envs_2seeds.csv")) as f:
        lines = f.read().splitlines()
    seed_col = lines[0].split(",").index("seed")
    csv_path.write_text("\n".join([lines[0]] + [line for line in lines[1:] if line.split(",")[seed_col] == "1"]) + "\n")
    monkeypatch.chdir(tmp_path)
    assert plot.main(["--csv", str(csv_path), "--summary"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["one_seed.csv"]
    header, rows = markdown_rows(capsys.readouterr().out)
    (walker,) = [row for row in rows if row["environment"] == "Walker2d-v4" and row["source"] == "ours, mean ± std"]
    assert [walker[c] for c in header[2:]] == ["812 (n=1)", "1491 (n=1)", "2400 (n=1)"]


def test_figure_draws_the_mean_where_its_seeds_all_have_an_evaluation_and_names_a_seed_far_behind(tmp_path, monkeypatch, capsys):
    """Seed 2 stopped at 20k: past it the bold mean line would be seed 1 alone under a label naming both
    (a jump where seed 2 stops); seed 1 goes on as its thin line, which sets the axis."""
    drawn = []
    monkeypatch.setattr(plot.plt, "close", drawn.append)
    seeds = {1: {10_000: 100.0, 20_000: 300.0, 30_000: 900.0}, 2: {10_000: 200.0, 20_000: 500.0}}
    plot.plot_env("Hopper-v4", {"ours": seeds}, {"ours": {"abc1234"}}, {}, str(tmp_path))
    (ax,) = drawn[0].axes
    (mean,) = [line for line in ax.get_lines() if line.get_linewidth() == 2]
    assert list(mean.get_xdata()) == [10_000, 20_000] and list(mean.get_ydata()) == [150.0, 400.0]
    assert mean.get_label() == "ours @ abc1234: mean of seeds 1, 2 to 20k, 95% bootstrap band"
    assert ax.get_xlim() == (0, 30_000)
    (band,) = ax.collections
    assert band.get_paths()[0].vertices[:, 0].max() == 20_000
    plot.plot_env("Hopper-v4", {"ours": {1: seeds[1]}}, {"ours": {"abc1234"}}, {}, str(tmp_path))
    (ax,) = drawn[1].axes
    assert [line.get_label() for line in ax.get_lines() if line.get_linewidth() == 2] == ["ours @ abc1234: seed 1"]
    assert not ax.collections  # no band from one seed
    plot.plot_env("Hopper-v4", {"ours": {1: {10_000: 1.0}, 2: {15_000: 2.0}}}, {"ours": {"abc1234"}}, {}, str(tmp_path))
    assert not [line for line in drawn[2].axes[0].get_lines() if line.get_linewidth() == 2]
    assert capsys.readouterr().err == "warning: Hopper-v4, ours: its seeds share no evaluation step, so no mean is drawn\n"
    # seeds 1 and 2 went to 30k, seed 3 (a run under way) is at 10k: the mean is theirs, to the end, and names seed 3
    seeds = {1: {10_000: 100.0, 20_000: 300.0, 30_000: 900.0}, 2: {10_000: 200.0, 20_000: 500.0, 30_000: 700.0}, 3: {10_000: 0.0}}
    plot.plot_env("Hopper-v4", {"ours": seeds}, {"ours": {"abc1234"}}, {}, str(tmp_path))
    (mean,) = [line for line in drawn[3].axes[0].get_lines() if line.get_linewidth() == 2]
    assert list(mean.get_xdata()) == [10_000, 20_000, 30_000] and list(mean.get_ydata()) == [150.0, 400.0, 800.0]
    assert mean.get_label() == "ours @ abc1234: mean of seeds 1, 2, 95% bootstrap band; seed 3 to 10k"


def test_figure_mean_covers_the_seeds_whose_shared_steps_hold_the_most_evaluations(tmp_path, monkeypatch):
    """One seed ahead of the rest and one far behind (as Walker2d's AMD group: seed 1 to 300k, seeds
    2-5 to 200k-230k, seed 6 to 110k): the mean is over the seeds in between, to the step they share,
    not over every seed to the shortest run's end; four seeds to 20k outweigh two to 30k."""
    drawn = []
    monkeypatch.setattr(plot.plt, "close", drawn.append)
    ramp = lambda last, scale: {step: scale * step / 1000 for step in range(10_000, last + 1, 10_000)}
    seeds = {1: ramp(40_000, 1.0), 2: ramp(30_000, 2.0), 3: ramp(30_000, 3.0), 4: ramp(10_000, 4.0)}
    plot.plot_env("Walker2d-v4", {"ours": seeds}, {"ours": {"abc1234"}}, {}, str(tmp_path))
    (mean,) = [line for line in drawn[0].axes[0].get_lines() if line.get_linewidth() == 2]
    assert list(mean.get_xdata()) == [10_000, 20_000, 30_000] and list(mean.get_ydata()) == [20.0, 40.0, 60.0]
    assert mean.get_label() == "ours @ abc1234: mean of seeds 1, 2, 3 to 30k, 95% bootstrap band; seed 4 to 10k"
    assert drawn[0].axes[0].get_xlim() == (0, 40_000)
    seeds = {1: ramp(30_000, 1.0), 2: ramp(30_000, 1.0), 3: ramp(20_000, 1.0), 4: ramp(20_000, 1.0)}
    plot.plot_env("Walker2d-v4", {"ours": seeds}, {"ours": {"abc1234"}}, {}, str(tmp_path))
    (mean,) = [line for line in drawn[1].axes[0].get_lines() if line.get_linewidth() == 2]
    assert list(mean.get_xdata()) == [10_000, 20_000]
    assert mean.get_label() == "ours @ abc1234: mean of seeds 1, 2, 3, 4 to 20k, 95% bootstrap band"


def test_figure_tells_every_group_apart_from_the_others_and_from_the_paper(tmp_path, monkeypatch):
    """Walker2d by CPU has six groups (two codes on three CPUs); a palette of five drew the first and the sixth
    in the same black."""
    drawn = []
    monkeypatch.setattr(plot.plt, "close", drawn.append)
    for n_groups in (6, 25):
        groups = {"group %02d" % g: {1: {10_000: g, 20_000: g}, 2: {10_000: g, 20_000: g}} for g in range(n_groups)}
        paper = {"MEow": {10_000: 1.0, 20_000: 2.0}, "SAC": {10_000: 1.0, 20_000: 2.0}}
        plot.plot_env("Walker2d-v4", groups, {group: {"abc1234"} for group in groups}, paper, str(tmp_path))
        lines = drawn[-1].axes[0].get_lines()
        means = [(line.get_color(), line.get_linestyle()) for line in lines if line.get_linewidth() == 2]
        assert len(means) == n_groups and len(set(means)) == n_groups
        paper_styles = {(line.get_color(), line.get_linestyle()) for line in lines if line.get_label().startswith("paper")}
        assert len(paper_styles) == 2 and not paper_styles & set(means)
        for line in lines:  # each seed's thin line in its group's colour and style
            if line.get_linewidth() == 0.8:
                assert (line.get_color(), line.get_linestyle()) in means


def test_a_legend_of_more_than_three_entries_goes_below_the_axes_and_a_short_one_stays_inside(tmp_path, monkeypatch):
    """Six groups and the paper's two curves: inside the axes the legend hid the top third of the curves."""
    drawn = []
    monkeypatch.setattr(plot.plt, "close", drawn.append)
    paper = {"MEow": {10_000: 1.0, 20_000: 2.0}, "SAC": {10_000: 1.0, 20_000: 2.0}}
    for n_groups in (1, 6):
        groups = {"group %d" % g: {1: {10_000: g, 20_000: g}, 2: {10_000: g, 20_000: g}} for g in range(n_groups)}
        plot.plot_env("Walker2d-v4", groups, {group: {"abc1234"} for group in groups}, paper, str(tmp_path))
    inside, below = drawn
    (ax,) = inside.axes
    assert ax.get_legend() is not None and not inside.legends
    (ax,) = below.axes
    assert ax.get_legend() is None
    (legend,) = below.legends
    assert len(legend.get_texts()) == 8
    renderer = below.canvas.get_renderer()
    box, axes_box, figure_box = legend.get_window_extent(renderer), ax.get_tightbbox(renderer), below.bbox
    assert box.y1 <= axes_box.y0  # under the axes and their tick labels
    assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0  # and not cut off


def test_figure_labels_each_group_with_its_own_commits(tmp_path, monkeypatch):
    rows = [plot.COLUMNS] + [["Walker2d-v4", "1", str(step), "100", commit, "AMD", variant]
                             for variant, commit in (("ours", "abc1234"), ("authors", "def5678")) for step in (10000, 20000)]
    with open(tmp_path / "w.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    drawn = []
    monkeypatch.setattr(plot.plt, "close", drawn.append)
    assert plot.main(["--csv", str(tmp_path / "w.csv"), "--out-dir", str(tmp_path / "figs")]) == 0
    (ax,) = drawn[0].axes
    assert [line.get_label() for line in ax.get_lines() if line.get_linewidth() == 2] == ["authors @ def5678: seed 1", "ours @ abc1234: seed 1"]


def section(path, heading):
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    text = text[text.index(heading):]
    return text[:text.index("\n## ", 1)]


def nth_table(text, n):
    """The n-th Markdown table of a text (from 0), as markdown_rows gives it."""
    lines, tables, start = text.splitlines() + [""], [], None
    for i, line in enumerate(lines):
        if line.startswith("|") and start is None:
            start = i
        elif not line.startswith("|") and start is not None:
            tables.append(markdown_rows("\n".join(lines[start:i])))
            start = None
    return tables[n]


STEPS_1M = ["--steps", "250k", "500k", "750k", "1M"]


@pytest.mark.parametrize("doc, heading, csv, flags, n", [
    ("README.md", "## Results", "mujoco_300k.csv", ["--summary"], 0),
    ("README.md", "## Results", "mujoco_1m.csv", ["--summary", *STEPS_1M], 1),
    ("docs/reproducing.md", "## Results in full", "mujoco_300k.csv", [], 0),
    ("docs/reproducing.md", "## Results in full", "mujoco_1m.csv", STEPS_1M, 1),
    ("docs/reproducing.md", "## Walker2d-v4 by CPU", "walker2d_by_cpu.csv", ["--by-cpu", "--ci", "--above", "1500", "--steps", "100k", "200k", "300k"], 0)])
def test_results_tables_are_what_plot_prints_from_the_committed_csv(tmp_path, doc, heading, csv, flags, n):
    """The tables are not typed in: they are plot.py's output for the committed CSVs, in order."""
    result = run_tool("plot.py", ["--csv", os.path.join(ROOT, "benchmarks", "results", csv), "--out-dir", "figs", *flags], tmp_path)
    assert result.returncode == 0, result.stderr
    assert nth_table(section(doc, heading), n) == markdown_rows(result.stdout)


def test_ablation_table_is_what_plot_prints_from_the_committed_csv(tmp_path):
    """docs/ablations.md's table, one row per fork: its seeds and cells are plot.py's for that variant."""
    csv = os.path.join(ROOT, "benchmarks", "results", "ablations_halfcheetah_100k.csv")
    result = run_tool("plot.py", ["--csv", csv, "--out-dir", "figs", "--steps", "50k", "100k"], tmp_path)
    assert result.returncode == 0, result.stderr
    printed = {row["source"]: row for row in markdown_rows(result.stdout)[1]}
    _, rows = nth_table(section("docs/ablations.md", "## HalfCheetah-v4, seeds 1-3, 100k steps"), 0)
    assert len(rows) == 5
    for row in rows:
        variant = row["fork"].split()[0]
        seeds = sorted(source.rsplit(" ", 1)[1] for source in printed if source.startswith(variant + ", seed "))
        assert row["seeds"].split() == seeds, variant
        for step in ("50k", "100k"):
            assert row[step].replace("\u2212", "-") == printed[variant + ", mean \u00b1 std"][step], (variant, step)


def test_run_seeds_resumes_cut_off_jobs_and_skips_finished_ones(tmp_path):
    own = ["--envs", "Hopper-v4", "--seeds", "1", "--jobs", "1"]
    assert run_tool("run_seeds.py", own + ["--", *TINY, "--save-model", "--save-buffer", "--checkpoint-frequency", "100"], tmp_path).returncode == 0
    (name,) = os.listdir(tmp_path / "runs")
    run_dir = tmp_path / "runs" / name
    os.remove(run_dir / "meow_continuous_action.pt")  # as if the session had ended before the run did
    checkpoint_step = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    result = run_tool("run_seeds.py", own + ["--resume", "--", "--total-timesteps", "600"], tmp_path)
    assert result.returncode == 0, result.stdout
    assert "resumed Hopper-v4__meow_continuous_action__1" in result.stdout
    assert os.listdir(tmp_path / "runs") == [name]  # the same run directory, continued
    log = (tmp_path / "logs" / "Hopper-v4__meow_continuous_action__1.log").read_text()
    assert "step 400/400" in log and "resuming %s from step %d" % (name, checkpoint_step) in log and "step 600/600" in log
    assert sorted(evals(run_dir)) == [200, 400, 600]
    result = run_tool("run_seeds.py", own + ["--resume", "--", "--total-timesteps", "600"], tmp_path)
    assert "skipping Hopper-v4__meow_continuous_action__1: finished" in result.stdout and "0/0 jobs succeeded" in result.stdout


def test_run_seeds_resume_keeps_the_log_of_a_job_that_starts_afresh(tmp_path):
    # a job cut off before its first checkpoint starts afresh under --resume: its earlier attempt's log stays
    own = ["--envs", "Hopper-v4", "--seeds", "1", "--resume", "--", "--alpha", "-1"]
    for _ in range(2):
        assert run_tool("run_seeds.py", own, tmp_path).returncode == 1
    log = (tmp_path / "logs" / "Hopper-v4__meow_continuous_action__1.log").read_text()
    assert log.count("error: --alpha must be > 0") == 2


def test_run_seeds_passes_a_stop_signal_on_to_its_jobs_and_starts_no_further_one(tmp_path):
    own = ["--envs", "Hopper-v4", "--seeds", "1", "2", "--jobs", "1"]
    flags = TINY + ["--total-timesteps", "600", "--log-frequency", "100", "--save-model"]
    tool = subprocess.Popen([sys.executable, os.path.join(BENCHMARKS, "run_seeds.py"), *own, "--", *flags], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "logs" / "Hopper-v4__meow_continuous_action__1.log"
    deadline = time.time() + 300
    while not (log.exists() and "step 200/600" in log.read_text()):
        assert time.time() < deadline and tool.poll() is None, "seed 1 did not reach step 200"
        time.sleep(0.2)
    tool.send_signal(signal.SIGUSR1)  # to the tool alone, as SLURM's --signal=B:USR1@... does
    out, _ = tool.communicate(timeout=300)
    assert tool.returncode == 128 + signal.SIGUSR1, out
    assert re.search(r"^stopped Hopper-v4__meow_continuous_action__1 after \S+ by SIGUSR1 \(exit code 138\)$", out, flags=re.M)
    assert "0/2 jobs succeeded" in out and "1 stopped by a signal, 1 not started: the same command with --resume continues them" in out
    assert re.search(r"^SIGUSR1: checkpoint at step \d+ written to ", log.read_text(), flags=re.M)
    assert not (tmp_path / "logs" / "Hopper-v4__meow_continuous_action__2.log").exists()


def test_run_seeds_passes_on_a_stop_signal_that_comes_while_a_job_starts(tmp_path, monkeypatch):
    """Between Popen and the job's entry in the running jobs, pass_on cannot see the job: it gets the signal
    once it is entered, instead of running to its end."""
    import types

    import run_seeds

    handlers = {}
    monkeypatch.setattr(run_seeds.signal, "signal", lambda signum, handler: handlers.setdefault(signum, handler))
    popen = subprocess.Popen

    def signalled_while_starting(*args, **kwargs):
        proc = popen(*args, **kwargs)
        handlers[signal.SIGUSR1](signal.SIGUSR1, None)
        return proc

    monkeypatch.setattr(run_seeds.subprocess, "Popen", signalled_while_starting)
    job = run_seeds.Job("Hopper-v4", 1, "sleeper", str(tmp_path / "sleeper.log"), (sys.executable, "-c", "import time; time.sleep(60)"), False)
    args = types.SimpleNamespace(workdir=str(tmp_path), jobs=1, resume=False, status_every=60.0)
    started = time.time()
    done, failed, stopped, signum = run_seeds.run(args, [job])
    assert (done, failed, stopped, signum) == ([], [], [job], signal.SIGUSR1) and time.time() - started < 30


def test_run_seeds_says_a_stopped_job_without_checkpoints_starts_over(tmp_path, capsys):
    import run_seeds

    own = ["--envs", "Hopper-v4", "--seeds", "1", "2", "--workdir", str(tmp_path), "--"]
    for flags, note in ((["--save_model"], ""), ([], " (from the start: without --save-model there are no checkpoints)")):
        jobs = run_seeds.make_jobs(run_seeds.parse_args(own + flags))
        run_seeds.report(jobs, [], [], [jobs[0]], str(tmp_path))
        assert "1 stopped by a signal, 1 not started: the same command with --resume continues them%s\n" % note in capsys.readouterr().out


def test_run_seeds_warns_when_resume_starts_a_job_that_will_write_no_checkpoint(tmp_path, capsys):
    import run_seeds

    own = ["--envs", "Hopper-v4", "--seeds", "1", "--workdir", str(tmp_path), "--resume", "--"]
    (job,) = run_seeds.make_jobs(run_seeds.parse_args(own + ["--total-timesteps", "600"]))
    assert not job.resumed
    assert "warning: Hopper-v4__meow_continuous_action__1 starts afresh without --save-model" in capsys.readouterr().err
    run_seeds.make_jobs(run_seeds.parse_args(own + ["--total-timesteps", "600", "--save-model"]))
    assert capsys.readouterr().err == ""


def test_run_seeds_and_tune_read_the_script_flags_in_either_spelling(tmp_path, capsys):
    """tyro takes `--buffer_size` as `--buffer-size` (and the last of two): the clash checks, the warning and
    the SLURM memory must read them so too."""
    import run_seeds
    import tune

    own = ["--envs", "Humanoid-v4", "--seeds", "1", "--workdir", str(tmp_path), "--slurm", str(tmp_path / "a.sbatch"), "--"]
    memory = [run_seeds.task_memory_mb(run_seeds.parse_args(own + flags)) for flags in (
        ["--buffer-size", "4000000", "--save-buffer"], ["--buffer_size", "4000000", "--save_buffer"],
        ["--buffer_size=4000000", "--save_buffer"], ["--buffer-size", "7", "--buffer_size", "4000000", "--save-buffer"])]
    assert memory == [1024 + math.ceil(2 * 4 * 10**6 * 771 * 4 / 2**20)] * 4
    assert run_seeds.flag_value(["--alpha", "0.1", "--buffer_size=5", "--gamma", "0.9"], "--buffer-size") == "5"
    run_seeds.make_jobs(run_seeds.parse_args(["--envs", "Hopper-v4", "--workdir", str(tmp_path), "--resume", "--", "--save_model"]))
    assert capsys.readouterr().err == ""
    for module, argv, message in (
        (run_seeds, ["--envs", "Hopper-v4", "--", "--env_id", "Walker2d-v4"], "error: --env_id is set by run_seeds.py itself"),
        (run_seeds, ["--envs", "Hopper-v4", "--", "--exp_name=x"], "error: --exp_name=x is set by run_seeds.py itself"),
        (run_seeds, ["--script", "meow_isaacgym.py", "--env-flag=--task", "--envs", "Ant", "--", "--task", "Humanoid"], "error: --task is set by run_seeds.py itself"),
        (tune, ["--", "--sigma_max", "2"], "error: --sigma_max is set by tune.py itself"),
        (tune, ["--", "--env_id=Walker2d-v4"], "error: --env_id=Walker2d-v4 is set by tune.py itself"),
    ):
        with pytest.raises(SystemExit) as exit:
            module.parse_args(argv)
        assert exit.value.code == 2 and capsys.readouterr().err.startswith(message), argv


def test_run_seeds_reports_failed_jobs(tmp_path):
    result = run_tool("run_seeds.py", ["--envs", "Hopper-v4", "--seeds", "1", "2", "--jobs", "2", "--", "--alpha", "-1"], tmp_path)
    assert result.returncode == 1
    assert "0/2 jobs succeeded" in result.stdout
    for seed in (1, 2):
        assert "FAILED Hopper-v4__meow_continuous_action__%d (exit code 2)" % seed in result.stdout
    assert result.stdout.count("error: --alpha must be > 0") == 2  # each job's log tail


def test_bad_input_gives_one_line_error(tmp_path):
    result = run_tool("run_seeds.py", ["--envs", "Hopper-v4", "--script", "no_such_script.py"], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown script 'no_such_script.py'")
    assert len(result.stderr.splitlines()) == 1


def test_plot_bad_input_gives_one_line_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.csv"
    cases = [
        (["--export", str(tmp_path), "--commit", "abc1234", "--csv", "out.csv"], "error: no runs found"),
        (["--export", "no_such_dir", "--commit", "abc1234", "--csv", "out.csv"], "error: no such run directory or pattern: no_such_dir"),
        (["--export", str(tmp_path), "--csv", "out.csv"], "error: --export needs --commit"),
        (["--export", str(tmp_path), "--commit", "HEAD", "--csv", "out.csv"], "error: --export needs --commit"),
        (["--export", str(tmp_path), "--commit", "abc1234", "--csv", "out.csv", "--out-dir", "figs"],
         "error: --out-dir goes with plotting, not with --export (plot the CSV in a second command)"),
        (["--export", str(tmp_path), "--commit", "abc1234", "--csv", "out.csv", "--above", "0"], "error: --above goes with plotting"),
        (["--export", str(tmp_path), "--commit", "abc1234", "--csv", "out.csv", "--steps", "100k"], "error: --steps goes with plotting"),
        (["--commit", "abc1234", "--csv", str(bad)], "error: --commit goes with --export"),
        (["--update", "--csv", str(bad)], "error: --update goes with --export"),
        (["--cpu", "AMD EPYC", "--csv", str(bad)], "error: --cpu goes with --export"),
        (["--tag", "Test/return", "--csv", str(bad)], "error: --tag goes with --export"),
        (["--variant", "authors", "--csv", str(bad)], "error: --variant goes with --export"),
        (["--csv", "missing.csv"], "error: no such file: missing.csv"),
        (["--csv", str(bad), "--steps", "10x"], "error: --steps takes positive step counts"),
        (["--csv", str(bad), "--no-such-flag"], "error: unrecognized arguments: --no-such-flag"),
    ]
    bad_rows = [
        ("env,seed,step,return\n", "the first line must be env,seed,step,return,commit"),
        ("env,seed,step,return,commit\nHopper-v4,1,10k,5.0,abc1234\n", "line 2: expected env,seed,step,return,commit"),
        ("env,seed,step,return,commit\nHopper-v4,1,10000,nan,abc1234\n", "line 2: the return must be a finite number"),
        ("env,seed,step,return,commit\nHopper-v4,1,10000,5.0,abc1234\nHopper-v4,1,10000,6.0,abc1234\n", "line 3: Hopper-v4 seed 1 has step 10000 twice"),
        ("env,seed,step,return,commit\n", "has no rows"),
    ]
    cases += [(["--csv", str(bad), "--out-dir", "figs"], text, content) for content, text in bad_rows]
    monkeypatch.chdir(tmp_path)
    for args, message, *content in cases:
        bad.write_text(content[0] if content else bad_rows[0][0])
        with pytest.raises(SystemExit) as exit:
            plot.main(args)
        out, err = capsys.readouterr()
        assert exit.value.code == 2 and message in err and err.startswith("error: "), (args, err)
        assert len(err.splitlines()) == 1 and out == "", args
        assert sorted(os.listdir(tmp_path)) == ["bad.csv"], args
    bad.write_bytes(b"env,seed,step,return,commit\nHopper-v4,1,10000,5.0,abc1234\n\x89PNG\r\n")  # text, then not
    with pytest.raises(SystemExit) as exit:
        plot.main(["--csv", str(bad), "--out-dir", "figs"])
    assert exit.value.code == 2 and capsys.readouterr().err == "error: %s is not a text file (UTF-8), so not a results CSV\n" % bad
    assert sorted(os.listdir(tmp_path)) == ["bad.csv"]


def test_the_bootstrap_interval_of_two_seeds_holds_the_mean_half_of_the_time():
    """With 2 seeds the percentile bootstrap interval is [min, max]: it holds the mean of a symmetric
    distribution with probability 1 - 2 / 4; with 6 it still falls short of 95%."""
    import bootstrap_coverage

    rng = np.random.default_rng(0)
    assert 0.44 < bootstrap_coverage.coverage(2, 1000, rng) < 0.56
    assert 0.75 < bootstrap_coverage.coverage(6, 400, rng) < 0.92


def test_split_test_gives_fishers_exact_p_for_two_groups_and_sums_the_splits_no_likelier_for_more(capsys):
    import split_test

    # Fisher's tea tasting: 4 of 4 cups against 0 of 4; the two extreme splits of C(8, 4) = 70 are as unlikely
    assert split_test.split_p_value([(4, 4), (0, 4)]) == pytest.approx(2 / 70)
    # 1 of 3 against 2 of 3: the splits have chances 1, 9, 9, 1 in 20, none likelier than the one seen
    assert split_test.split_p_value([(1, 3), (2, 3)]) == pytest.approx(1.0)
    # three groups, 6 of 20 runs: 3 of 5 / 2 of 7 / 1 of 8 by hand, the chances of every split not above the seen one
    seen = math.comb(5, 3) * math.comb(7, 2) * math.comb(8, 1)
    chances = [math.comb(5, a) * math.comb(7, b) * math.comb(8, 6 - a - b) for a in range(6) for b in range(6 - a + 1)]
    p = sum(c for c in chances if c <= seen) / math.comb(20, 6)
    assert split_test.split_p_value([(3, 5), (2, 7), (1, 8)]) == pytest.approx(p)
    # the order of the groups and which side is counted do not matter
    assert split_test.split_p_value([(1, 8), (3, 5), (2, 7)]) == pytest.approx(split_test.split_p_value([(2, 5), (5, 7), (7, 8)]))
    assert split_test.main(["3/5", "2/7", "1/8"]) == 0
    assert capsys.readouterr().out == "split 3 of 5 / 2 of 7 / 1 of 8 (6 of 20 runs in all): exact p = %.3f\n" % p
    for argv, error in ((["7/5", "1/2"], "expected 0 <= W <= N and N >= 1, got '7/5'"), (["3/5"], "give two groups or more"),
                        (["a/b", "1/2"], "expected W/N, two whole numbers, got 'a/b'"),
                        (["100/200"] * 4 + ["1/2"], "more than 10000000 tables to enumerate")):
        with pytest.raises(SystemExit) as exit:
            split_test.main(argv)
        err = capsys.readouterr().err
        assert exit.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and error in err, err


def test_split_test_adjusts_for_a_split_read_again_as_the_last_group_grew(capsys):
    """Against a brute force: every placement of the runs that have the property among all runs, each read at
    every size of the last group; the share of placements where some reading's p is as small as the last one's."""
    import split_test

    def brute(groups, looks):
        runs, hits = [n for _, n in groups], sum(w for w, _ in groups)
        bounds = list(itertools.accumulate([0] + runs))
        seen, alarms, placements = split_test.split_p_value(groups), 0, 0
        for chosen in itertools.combinations(range(sum(runs)), hits):
            counts = [sum(bounds[i] <= c < bounds[i + 1] for c in chosen) for i in range(len(runs))]
            readings = []
            for size in list(looks) + [runs[-1]]:
                last = sum(bounds[-2] <= c < bounds[-2] + size for c in chosen)
                readings.append(split_test.split_p_value(list(zip(counts[:-1], runs[:-1])) + [(last, size)]))
            alarms += min(readings) <= seen
            placements += 1
        return alarms / placements

    for groups, looks in (([(3, 4), (1, 6)], [3, 4]), ([(2, 3), (1, 3), (1, 7)], [4, 5, 6]), ([(0, 3), (4, 6)], [2])):
        adjusted = split_test.adjusted_p_value(groups, looks)
        assert adjusted == pytest.approx(brute(groups, looks))
        # a reading more can only add alarms; no reading but the last gives the plain p
        assert split_test.split_p_value(groups) <= adjusted
        assert split_test.adjusted_p_value(groups, []) == pytest.approx(split_test.split_p_value(groups))
    assert split_test.main(["2/3", "1/3", "1/7", "--looks", "6", "4", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == ("read also at the last group's first 4, 5, 6 runs: adjusted p = %.3f (the chance of a p this small "
                      "at one reading or more)" % brute([(2, 3), (1, 3), (1, 7)], [4, 5, 6]))
    for argv in (["2/3", "1/7", "--looks", "7"], ["2/3", "1/7", "--looks", "0"]):
        with pytest.raises(SystemExit) as exit:
            split_test.main(argv)
        err = capsys.readouterr().err
        assert exit.value.code == 2 and err == "error: each of --looks must be at least 1 and below the last group's 7 runs\n"


def test_steps_are_read_in_decimal():
    """4.1 * 10**6 in floats is 4099999.9999999995: such a step count is still a whole number of steps."""
    assert [plot.parse_steps(text) for text in ("100k", "1.5M", "600", "4.1M", "2.01M", "16.1k", "1e3")] == [
        100000, 1500000, 600, 4100000, 2010000, 16100, 1000]
    for text in ("0", "-5", "1.5", "0.0001k", "10x", "1/2", "nan", "inf", "", "k"):
        with pytest.raises(SystemExit):
            plot.parse_steps(text)


def test_make_gif_films_a_model_saved_by_another_version_of_the_script(tmp_path):
    ckpt = torch.load(os.path.join(ROOT, "docs", "models", "Hopper-v4.pt"), weights_only=False)
    ckpt["args"]["a_flag_of_another_version"] = 1  # --eval-checkpoint reads such files; so must make_gif
    del ckpt["args"]["log_frequency"]
    torch.save(ckpt, tmp_path / "model.pt")
    env = {k: v for k, v in ENV.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")}
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "make_gif.py"), "model.pt", "out.gif", "--seconds", "1", "--width", "48"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "12 frames (1.0 s of Hopper-v4" in result.stdout
    data = (tmp_path / "out.gif").read_bytes()
    assert data[:6] == b"GIF89a" and struct.unpack("<H", data[6:8])[0] == 48  # the logical screen width


def test_tune_runs_trials_into_sqlite_study(tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = "sqlite:///%s" % (tmp_path / "tune.db")
    args = ["--n-trials", "2", "--storage", storage, "--study-name", "tiny", "--workdir", "trials", "--last-evals", "2", "--sampler-seed", "0"]
    result = run_tool("tune.py", args + ["--", *TINY], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in study.trials:
        scores = evals(trial.user_attrs["run_dir"])
        assert trial.value == pytest.approx(np.mean([scores[200], scores[400]]), rel=1e-6)
        assert 0.01 <= trial.params["alpha"] <= 1.0 and 1e-4 <= trial.params["tau"] <= 0.05
        assert "--alpha=%s" % trial.params["alpha"] in open(trial.user_attrs["log"]).readline()
    best = study.best_trial
    assert "best trial %d" % best.number in result.stdout
    assert "alpha = %.6g" % best.params["alpha"] in result.stdout
    assert "sigma_max = %.6g" % best.params["sigma_max"] in result.stdout


def test_tune_marks_failed_trial_as_failed(tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = "sqlite:///%s" % (tmp_path / "tune.db")
    result = run_tool("tune.py", ["--n-trials", "1", "--storage", storage, "--study-name", "bad", "--workdir", "trials", "--", "--gamma", "2"], tmp_path)
    assert result.returncode == 1
    assert "trial 0 FAILED: training exited with code 2" in result.stderr
    assert "--gamma must be in [0, 1]" in result.stderr  # the log tail
    study = optuna.load_study(study_name="bad", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def test_a_trial_whose_score_is_not_finite_fails_as_itself(tmp_path, monkeypatch, capsys):
    """Optuna records a NaN score as FAIL; that must read as this trial's failure, not as another worker's
    having taken it for dead."""
    optuna = pytest.importorskip("optuna")
    import tune

    def train(command, cwd, **kwargs):
        os.makedirs(os.path.join(cwd, "runs", "Hopper-v4__meow_continuous_action__1__1"))
        return 0

    monkeypatch.setattr(tune.subprocess, "call", train)
    monkeypatch.setattr(tune, "read_evals", lambda run_dir: [250.0, float("nan")])
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///%s" % (tmp_path / "tune.db")
    optuna.logging.disable_default_handler()
    try:
        code = tune.main(["--n-trials", "1", "--storage", url, "--study-name", "nan", "--workdir", "trials", "--last-evals", "2"])
    finally:
        optuna.logging.enable_default_handler()
    err = capsys.readouterr().err
    assert code == 1 and "marked failed while it ran" not in err
    assert "trial 0 FAILED: the score, the mean of eval/return over the last 2 evaluations, is nan" in err
    assert [t.state for t in optuna.load_study(study_name="nan", storage=url).trials] == [optuna.trial.TrialState.FAIL]


def test_the_best_trial_is_reported_with_the_evaluations_it_was_scored_on(tmp_path, monkeypatch, capsys):
    optuna = pytest.importorskip("optuna")
    import tune

    def train(command, cwd, **kwargs):
        os.makedirs(os.path.join(cwd, "runs", "Hopper-v4__meow_continuous_action__1__1"))
        return 0

    monkeypatch.setattr(tune.subprocess, "call", train)
    monkeypatch.setattr(tune, "read_evals", lambda run_dir: [100.0, 200.0, 300.0])
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///%s" % (tmp_path / "tune.db")
    optuna.logging.disable_default_handler()
    try:
        assert tune.main(["--n-trials", "1", "--storage", url, "--study-name", "s", "--workdir", "trials", "--last-evals", "2"]) == 0
        capsys.readouterr()
        assert tune.main(["--n-trials", "0", "--storage", url, "--study-name", "s", "--last-evals", "5"]) == 0
    finally:
        optuna.logging.enable_default_handler()
    assert "best trial 0: mean eval/return over the last 2 evaluations = 250.00" in capsys.readouterr().out


@pytest.mark.parametrize("noticed_at", ["tell", "user_attr"])
def test_a_worker_silent_past_its_heartbeat_drops_its_result_and_the_study_runs_the_trial_again(noticed_at, tmp_path, monkeypatch, capsys):
    """A worker paused (or cut off) for over two heartbeat intervals while it trains: another worker takes
    its trial for dead, marks it failed and queues it again. The paused worker's result is dropped with
    one warning, and the worker goes on with the queued trial; the paused worker finds out when it scores
    the trial, or before, when run_trial writes the trial's run directory to the study."""
    optuna = pytest.importorskip("optuna")
    import contextlib

    import tune

    url = "sqlite:///%s" % (tmp_path / "tune.db")
    ran = []

    @contextlib.contextmanager
    def silent_after_one_beat(storage, trial):
        storage.record_heartbeat(trial._trial_id)
        yield

    def run_trial(args, trial, env, storage):
        ran.append((trial.number, trial.suggest_float("alpha", 0.01, 1.0, log=True)))
        if trial.number == 0:
            time.sleep(3.5 * args.heartbeat_interval)  # stale after 2; SQLite's clock reads whole seconds
            optuna.storages.fail_stale_trials(optuna.load_study(study_name="stale", storage=storage))  # another worker
            if noticed_at == "user_attr":
                trial.set_user_attr("run_dir", "runs/x")
        return 1.0 + trial.number

    monkeypatch.setattr(tune, "heartbeat", silent_after_one_beat)
    monkeypatch.setattr(tune, "run_trial", run_trial)
    monkeypatch.chdir(tmp_path)
    optuna.logging.disable_default_handler()  # its stream would be an earlier test's captured stderr
    try:
        code = tune.main(["--n-trials", "2", "--storage", url, "--study-name", "stale", "--heartbeat-interval", "1", "--workdir", "trials"])
    finally:
        optuna.logging.enable_default_handler()
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("warning: trial 0 was marked failed while it ran") == 1 and "Traceback" not in err
    failed, again = optuna.load_study(study_name="stale", storage=url).trials
    assert failed.state == optuna.trial.TrialState.FAIL and failed.value is None
    assert again.state == optuna.trial.TrialState.COMPLETE and again.value == 2.0 and again.system_attrs["failed_trial"] == 0
    assert ran[1] == (1, ran[0][1])  # the same parameters, run again


def test_bench_update_prints_every_variant_and_the_ratios(tmp_path):
    result = run_tool("bench_update.py", ["--envs", "Hopper-v4", "--warmup", "2", "--repeats", "20", "--no-compile"], tmp_path)
    assert result.returncode == 0, result.stderr
    header, rows = markdown_rows(result.stdout)
    assert [row["sizes"] for row in rows] == ["Hopper-v4 (obs 11, act 3)"]
    times = [float(rows[0][column].split()[0]) for column in header[1:4]]
    ratios = [float(rows[0][column]) for column in header[4:6]]
    assert all(t > 0 for t in times)
    assert abs(ratios[0] - times[0] / times[1]) < 0.01 and abs(ratios[1] - times[0] / times[2]) < 0.01  # printed to 2 decimals


def test_bench_update_against_a_commit_times_that_commits_update_beside_this_one(tmp_path):
    if subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD~1"], capture_output=True).returncode:
        pytest.skip("not a git checkout with a parent commit")
    result = run_tool("bench_update.py", ["--envs", "Hopper-v4", "--warmup", "2", "--repeats", "20", "--no-compile", "--against", "HEAD~1"], tmp_path)
    assert result.returncode == 0, result.stderr
    header, rows = markdown_rows(result.stdout)
    assert header[-3:] == ["(0) at HEAD~1", "(1)/(0)", "(0)/(3)"]
    t1, t3, t0 = (float(rows[0][column].split()[0]) for column in (header[1], header[3], header[-3]))
    assert abs(float(rows[0]["(1)/(0)"]) - t1 / t0) < 0.01 and abs(float(rows[0]["(0)/(3)"]) - t0 / t3) < 0.01
    bad = run_tool("bench_update.py", ["--against", "no-such-commit"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: cannot read meow_continuous_action.py at no-such-commit")


def test_bench_loop_times_the_training_loop_of_each_variant(tmp_path):
    args = ["--learning-starts", "300", "--warmup-steps", "300", "--steps", "300", "--variants", "eager-1thread", "sac"]
    result = run_tool("bench_loop.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    _, rows = markdown_rows(result.stdout)
    assert [row["variant"] for row in rows] == ["eager-1thread", "sac"]
    sps = [float(row["training SPS"]) for row in rows]
    assert all(s > 0 for s in sps)
    assert abs(float(rows[0]["vs sac"].rstrip("x")) - sps[0] / sps[1]) < 0.01
    assert os.listdir(tmp_path) == []  # the runs went to a temporary directory


# ---------------------------------------------------------------- bench_programs.py: steps/s of whole programs

FAKE_PROGRAM = """
import sys
from torch.utils.tensorboard import SummaryWriter
writer = SummaryWriter("runs/fake")
# steps 0..9000 every 500: 50 steps/s before step 4000, 100 steps/s from it on (wall times given, not measured)
wall = 1000.0
for step in range(0, 9001, 500):
    writer.add_scalar("charts/SPS", 0.0, step, walltime=wall)
    wall += 500 / (50 if step < 4000 else 100)
writer.close()
sys.exit(int(sys.argv[1]))
"""


def test_bench_programs_reads_steps_per_second_off_the_wall_times_of_the_window(tmp_path):
    import bench_programs
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE_PROGRAM)
    # from 4000 to 9000: 5000 steps at 100 steps/s; a mark between points takes the next point (4100 -> 4500)
    assert bench_programs.program_sps([sys.executable, str(fake), "0"], (4000, 9000)) == pytest.approx(100.0)
    assert bench_programs.program_sps([sys.executable, str(fake), "0"], (4100, 9000)) == pytest.approx(100.0)
    # 0 to 4000 at 50, 4000 to 6000 at 100: 6000 steps in 80 + 20 s
    assert bench_programs.program_sps([sys.executable, str(fake), "0"], (0, 6000)) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="no point at or after step 9500"):
        bench_programs.program_sps([sys.executable, str(fake), "0"], (4000, 9500))
    with pytest.raises(RuntimeError, match="exited with 3"):
        bench_programs.program_sps([sys.executable, str(fake), "3"], (4000, 9000))


def test_bench_programs_refuses_a_missing_script_with_one_error_line(tmp_path):
    done = run_tool("bench_programs.py", ["--sac", str(tmp_path / "nowhere.py"), "--rounds", "1"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --sac: no such file: %s" % (tmp_path / "nowhere.py")
    done = run_tool("bench_programs.py", ["--threads", "0"], tmp_path)
    assert done.returncode == 2 and "expected 'default' or a positive integer" in done.stderr
