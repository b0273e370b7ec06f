"""End-to-end tests of the benchmarks/ tools on tiny real runs (speed is printed by the speed benchmarks, never asserted).

Every tool runs as a subprocess in a temporary directory, so nothing is written to the repository.
"""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
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


def test_plot_writes_png_and_compares_with_paper(tiny_runs):
    workdir, _ = tiny_runs
    result = run_tool("plot.py", ["runs", "--out-dir", "figs"], workdir)
    assert result.returncode == 0, result.stderr

    png = (workdir / "figs" / "Hopper-v4_eval_return.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (840, 540)  # IHDR: 7 x 4.5 inches at 120 dpi
    assert len(png) > 10_000  # curves and legend, not an empty canvas

    header, rows = markdown_rows(result.stdout)
    assert header == ["environment", "source", "100k", "200k", "300k", "500k", "final"]
    by_source = {row["source"]: row for row in rows}
    assert {row["environment"] for row in rows} == {"Hopper-v4"}
    assert by_source["paper MEow"]["100k"] == "700"
    assert by_source["paper MEow"]["500k"] == "3350"
    assert by_source["paper MEow"]["final"] == "3332.99 at 1.5M"
    assert by_source["paper SAC"]["200k"] == "1600"

    ours = by_source["ours: meow_continuous_action"]
    assert ours["100k"] == ours["500k"] == "–"  # 400-step runs reach no checkpoint
    final = [evals(workdir / "runs" / name)[400] for name in os.listdir(workdir / "runs")]
    assert ours["final"] == "%.1f ± %.1f (n=2) at 400" % (np.mean(final), np.std(final))


def test_plot_lists_every_seed_every_n_steps(tiny_runs):
    workdir, _ = tiny_runs
    result = run_tool("plot.py", ["runs", "--out-dir", "figs", "--every", "200"], workdir)
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("Each seed's eval/return:")[1]
    header, rows = markdown_rows(table)
    assert header == ["environment", "seed", "200", "400"]
    for name in os.listdir(workdir / "runs"):
        seed = int(name.split("__")[2])
        (row,) = [r for r in rows if r["seed"] == "meow_continuous_action %d" % seed]
        expected = evals(workdir / "runs" / name)
        assert [row["200"], row["400"]] == ["%.0f" % expected[200], "%.0f" % expected[400]]


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

    result = run_tool("plot.py", [str(tmp_path)], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: no runs found")
    assert len(result.stderr.splitlines()) == 1


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


def test_bench_update_prints_every_variant_and_the_ratios(tmp_path):
    result = run_tool("bench_update.py", ["--envs", "Hopper-v4", "--warmup", "2", "--repeats", "20", "--no-compile"], tmp_path)
    assert result.returncode == 0, result.stderr
    header, rows = markdown_rows(result.stdout)
    assert [row["sizes"] for row in rows] == ["Hopper-v4 (obs 11, act 3)"]
    times = [float(rows[0][column].split()[0]) for column in header[1:4]]
    ratios = [float(rows[0][column]) for column in header[4:6]]
    assert all(t > 0 for t in times)
    assert abs(ratios[0] - times[0] / times[1]) < 0.01 and abs(ratios[1] - times[0] / times[2]) < 0.01  # printed to 2 decimals


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
