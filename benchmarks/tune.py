"""Hyper-parameter search for MEow with Optuna (needs `pip install optuna`).

Each trial samples alpha (log-uniform), tau (log-uniform) and sigma_max (uniform) from
SEARCH_SPACE and runs the training script as a subprocess:
    python SCRIPT --env-id ENV --seed SEED --alpha A --tau T --sigma-max S <flags after -->
in WORKDIR/{study_name}/trial_{number}/ (its log: train.log there). The flags after `--` set the
budget, e.g. --total-timesteps. The trial's score is the mean `eval/return` over its last
--last-evals evaluations, read from its TensorBoard files; Optuna maximises it. A trial whose
run exits non-zero, or logs no evaluation, is marked FAIL (its log tail is printed) and the
sweep goes on; the tool exits 1 if no trial of the study has completed.

The study lives in an Optuna RDB storage (default: the SQLite file ./meow_tune.db) and is
opened with load_if_exists, so running the same command again resumes the sweep (each
invocation adds --n-trials trials; --n-trials 0 only prints the best trial so far), and several
worker processes on one machine can share the SQLite file. To spread a sweep over several
machines, give every worker the same database server, e.g. --storage
postgresql://user:password@host/dbname (its driver, psycopg, is in requirements.txt) and the same
--study-name. Trials run with OMP_NUM_THREADS=1 unless it is set (the nets are small).

A worker that dies (its machine fails, or it is killed) takes its training run with it (Linux) and
stops the heartbeat it writes to the study every --heartbeat-interval seconds; after two intervals
without one, the next worker to start a trial marks the dead worker's trial FAIL and queues its
parameters once more as a new trial, which the next free worker runs.

Example (a sweep of 2 workers x 10 trials of 100k steps, scored on the last 5 evaluations):
    for worker in 1 2; do
        python benchmarks/tune.py --env-id Hopper-v4 --n-trials 10 --last-evals 5 -- --total-timesteps 100000 &
    done; wait
"""
import argparse
import collections
import contextlib
import ctypes
import glob
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import optuna
import sqlalchemy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from run_seeds import DEFAULT_SCRIPT, fail, flag_name, resolve_script, split_passthrough  # the conventions of run_seeds.py

TAG = "eval/return"
# (low, high, log scale); the paper's values (alpha 0.05-0.25, tau 1e-4-5e-3, sigma_max -0.3 or 2)
# lie inside these ranges
SEARCH_SPACE = {
    "alpha": (0.01, 1.0, True),
    "tau": (1e-4, 0.05, True),
    "sigma_max": (-1.0, 2.0, False),
}
# flags this tool sets itself; passing them after `--` too would be ambiguous
OWN_FLAGS = ["--env-id", "--seed"] + ["--" + name.replace("_", "-") for name in SEARCH_SPACE]


class TrialFailed(Exception):
    """A trial that produced no score: Optuna records it as FAIL and the sweep continues."""


def parse_args(argv):
    own, passthrough = split_passthrough(argv)
    parser = argparse.ArgumentParser(
        description="Tune MEow's alpha, tau and sigma_max with Optuna; flags after `--` go to the training script.",
        usage="%(prog)s [options] [-- SCRIPT_FLAGS ...]",
    )
    parser.add_argument("--env-id", default="Hopper-v4", help="environment to tune on (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="training seed of every trial (default: %(default)s)")
    parser.add_argument("--n-trials", type=int, default=20, help="trials this invocation runs; 0: print the study's best trial and exit (default: %(default)s)")
    parser.add_argument("--last-evals", type=int, default=5, help="score = mean eval/return over this many last evaluations (default: %(default)s)")
    parser.add_argument("--storage", default="sqlite:///meow_tune.db", help="Optuna storage URL (default: %(default)s)")
    parser.add_argument("--study-name", default=None, help="study to create or resume (default: meow-ENV_ID)")
    parser.add_argument("--script", default=DEFAULT_SCRIPT, help="training script (default: %(default)s)")
    parser.add_argument("--workdir", default="tune_runs", help="trial runs and logs go under WORKDIR/STUDY_NAME/ (default: %(default)s)")
    parser.add_argument("--sampler-seed", type=int, default=None, help="seed of the TPE sampler (leave unset when workers share a study)")
    parser.add_argument("--heartbeat-interval", type=int, default=60, help="seconds between a running trial's heartbeats; one silent for two intervals is a dead worker's (default: %(default)s)")
    args = parser.parse_args(own)
    args.passthrough = passthrough
    if args.n_trials < 0 or args.last_evals < 1 or args.heartbeat_interval < 1:
        fail("--n-trials must be >= 0, --last-evals and --heartbeat-interval >= 1")
    clashing = [f for f in passthrough if flag_name(f) in OWN_FLAGS]
    if clashing:
        fail("%s is set by tune.py itself (use --env-id/--seed, or edit SEARCH_SPACE)" % clashing[0])
    args.script = resolve_script(args.script)
    args.study_name = args.study_name or "meow-%s" % args.env_id
    return args


def tail(path, n=15):
    with open(path, errors="replace") as f:
        return "".join(collections.deque(f, maxlen=n))


def read_evals(run_dir):
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    if TAG not in accumulator.Tags()["scalars"]:
        return []
    return [event.value for event in sorted(accumulator.Scalars(TAG), key=lambda e: e.step)]


# prctl(PR_SET_PDEATHSIG, sig): the kernel sends sig to this process when its parent dies (Linux); libc
# is loaded here, so that the child between fork and exec only makes the call
PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent():
    """preexec_fn of a trial's training run: it is killed when this worker dies, even by SIGKILL."""
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def heartbeat(storage, trial):
    """Write the trial's heartbeat to the study every interval while the trial runs and is scored, so
    that a worker that dies leaves a trial whose heartbeat goes stale."""
    storage.record_heartbeat(trial._trial_id)  # before the run: a trial that never had one never goes stale
    stop = threading.Event()

    def beat():
        while not stop.wait(storage.heartbeat_interval):
            storage.record_heartbeat(trial._trial_id)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trial(args, trial, env, storage):
    """Train with the trial's sampled flags; return its score or raise TrialFailed."""
    params = {name: trial.suggest_float(name, low, high, log=log) for name, (low, high, log) in SEARCH_SPACE.items()}
    trial_dir = os.path.abspath(os.path.join(args.workdir, args.study_name, "trial_%d" % trial.number))
    os.makedirs(trial_dir, exist_ok=True)
    # a trial number is used once per study, but the folder may survive a deleted study
    before = set(glob.glob(os.path.join(trial_dir, "runs", "*")))
    command = [sys.executable, args.script, "--env-id", args.env_id, "--seed", str(args.seed)]
    command += ["--%s=%s" % (name.replace("_", "-"), value) for name, value in params.items()] + args.passthrough
    log_path = os.path.join(trial_dir, "train.log")
    trial.set_user_attr("log", log_path)
    retried = storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")  # set by RetryHeartbeatStaleTrialCallback
    print("trial %d%s: %s (log: %s)" % (trial.number, "" if retried is None else " (trial %d again: its worker died)" % retried,
                                        ", ".join("%s=%.4g" % kv for kv in params.items()), log_path), flush=True)
    with open(log_path, "w") as log:
        log.write("$ %s\n" % " ".join(command))
        log.flush()
        code = subprocess.call(command, cwd=trial_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=die_with_parent if LIBC else None)
    if code != 0:
        raise TrialFailed("training exited with code %d; last lines of %s:\n%s" % (code, log_path, tail(log_path)))
    new_runs = sorted(set(glob.glob(os.path.join(trial_dir, "runs", "*"))) - before)
    if len(new_runs) != 1:
        raise TrialFailed("expected one new run directory in %s, found %d" % (trial_dir, len(new_runs)))
    trial.set_user_attr("run_dir", new_runs[0])
    evals = read_evals(new_runs[0])
    if not evals:
        raise TrialFailed("the run logged no %s (is --total-timesteps below --eval-frequency?)" % TAG)
    if len(evals) < args.last_evals:
        print("warning: trial %d logged %d evaluations, fewer than --last-evals %d; scoring all of them" % (trial.number, len(evals), args.last_evals), file=sys.stderr)
    trial.set_user_attr("last_evals", min(len(evals), args.last_evals))
    score = float(np.mean(evals[-args.last_evals :]))
    if not np.isfinite(score):  # Optuna would record it as FAIL on its own, which main() takes for another worker's doing
        raise TrialFailed("the score, the mean of %s over the last %d evaluations, is %s" % (TAG, args.last_evals, score))
    return score


def tell_failed(study, trial):
    """Mark the trial failed, unless another worker already has (its heartbeat went stale)."""
    study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def open_storage(args):
    """The study's RDB storage. Workers started at once on a new database race to create its tables
    (optuna/optuna#1092); the loser's error does not come back when it opens the storage again."""
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(args.storage, heartbeat_interval=args.heartbeat_interval,
                                              heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 2:
                raise
            time.sleep(1)


def main(argv):
    args = parse_args(argv)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # so that a crash's log tail has everything printed before it
    # the nets are small: torch's extra threads buy little, and on a loaded machine their
    # spin-waiting made a tiny run ~10x slower; a value the user exported is kept
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    # Optuna calls its heartbeat API experimental, and expects it with study.optimize, which ask/tell
    # replaces here; both work as documented, so their warnings would only be noise in every worker's log
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    storage = open_storage(args)
    sampler = optuna.samplers.TPESampler(seed=args.sampler_seed)
    if args.n_trials == 0:
        try:
            study = optuna.load_study(storage=storage, study_name=args.study_name, sampler=sampler)
        except KeyError:
            fail("no study %r in %s" % (args.study_name, args.storage))
    else:
        study = optuna.create_study(storage=storage, study_name=args.study_name, direction="maximize", sampler=sampler, load_if_exists=True)
    # ask/tell rather than study.optimize: a failed run is an expected outcome, reported with its
    # log tail, not an exception with a traceback
    for _ in range(args.n_trials):
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, and queued again
        trial = study.ask()
        try:
            with heartbeat(storage, trial):
                score = run_trial(args, trial, env, storage)
            if study.tell(trial, score, skip_if_finished=True).state != optuna.trial.TrialState.COMPLETE:
                raise optuna.exceptions.UpdateFinishedTrialError
        except optuna.exceptions.UpdateFinishedTrialError:
            # this worker was silent for two heartbeat intervals (stopped, or cut off from the server), and
            # another one took the trial for dead: the study already holds it as failed and runs it again
            print("warning: trial %d was marked failed while it ran (its heartbeat went stale: this worker was paused or cut off "
                  "for over %d s); its result is dropped and the study runs the trial again" % (trial.number, 2 * args.heartbeat_interval),
                  file=sys.stderr, flush=True)
            continue
        except TrialFailed as e:
            print("trial %d FAILED: %s" % (trial.number, e), file=sys.stderr, flush=True)
            tell_failed(study, trial)
            continue
        except BaseException:  # Ctrl-C: do not leave the trial RUNNING in the shared study
            tell_failed(study, trial)
            raise
        print("trial %d: score %.2f" % (trial.number, score), flush=True)

    states = collections.Counter(t.state.name for t in study.trials)
    print("\nstudy %r in %s: %s" % (args.study_name, args.storage, ", ".join("%d %s" % (n, s) for s, n in sorted(states.items()))))
    if not states["COMPLETE"]:
        print("error: no trial of the study has completed", file=sys.stderr)
        return 1
    best = study.best_trial
    print("best trial %d: mean %s over the last %d evaluations = %.2f" % (best.number, TAG, best.user_attrs.get("last_evals", args.last_evals), best.value))
    for name, value in best.params.items():
        print("  %s = %.6g" % (name, value))
    flags = " ".join("--%s=%.6g" % (name.replace("_", "-"), value) for name, value in best.params.items())
    print("train with: python %s --env-id %s %s" % (os.path.relpath(args.script), args.env_id, flags))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
