"""Run a grid of (env, seed) training jobs as separate processes, a few at a time.

Each job is `python SCRIPT --env-id ENV --seed SEED [--exp-name NAME] <flags after -->`
(--env-flag renames --env-id for a script that calls it otherwise: --env-flag=--task), started in
--workdir, so its TensorBoard run directory lands in WORKDIR/runs/{env}__{exp}__{seed}__{time}/
(benchmarks/plot.py --export WORKDIR/runs --commit COMMIT makes its CSV). Its stdout and stderr go to
WORKDIR/logs/{env}__{exp}__{seed}.log (overwritten when the same job is run again). With more
than one job at a time, each gets OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1 (unless exported).

Progress is printed whenever a job ends and every --status-every seconds (with the last
"step ..." line of each running job). A job that exits non-zero is reported with its exit code
and the end of its log, and makes this tool exit with status 1.

Example (3 seeds of Hopper, 2 at a time, 100k steps each):
    python benchmarks/run_seeds.py --envs Hopper-v4 --seeds 1 2 3 --jobs 2 -- --total-timesteps 100000

Long runs: pass `-- --save-model --save-buffer` so that each job writes checkpoints; the same command
with --resume then continues every job from the newest checkpoint.pt of its (env, seed) under
WORKDIR/runs (the script's own --resume: its saved args, an explicit --total-timesteps may extend it),
skips the jobs whose final model file exists, and starts the others afresh with the flags after --
(so give the same ones again). Logs are appended to.
    python benchmarks/run_seeds.py --envs Hopper-v4 --seeds 1 2 3 --jobs 2 --resume -- --total-timesteps 300000 --save-model --save-buffer
SIGTERM or SIGUSR1 sent to this tool goes to its running jobs, which (with --save-model) write a
checkpoint at their next episode end and stop; it then starts no further job and exits with 128 + the
signal's number.

Clusters: --slurm FILE writes a SLURM job array instead of running anything, one array task per (env, seed)
job in the same order, with the same flags after `--`; `sbatch FILE` submits it. Each task runs this tool
for its own job with --resume, so a task that starts again (re-queued after a pre-emption, or the
file submitted again) continues from its newest checkpoint, and one whose job has finished ends at once.
    python benchmarks/run_seeds.py --envs Hopper-v4 Humanoid-v4 --seeds 1 2 3 --slurm seeds.sbatch -- --total-timesteps 1000000 --save-model --save-buffer
"""
import argparse
import collections
import dataclasses
import importlib.util
import math
import os
import shlex
import signal
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SCRIPT = "meow_continuous_action.py"
# flags this tool sets itself for every job (with --env-flag); passing them after `--` would make jobs clash
OWN_FLAGS = ("--seed", "--exp-name")

Job = collections.namedtuple("Job", ["env_id", "seed", "name", "log_path", "command", "resumed"])
# a SLURM task gets this signal so long before its time limit (its batch shell is this tool, which passes
# it on): time for the run to reach an episode end and save a checkpoint with a large replay buffer
SLURM_WARNING = "B:USR1@300"
# a training process without its replay buffer: torch, MuJoCo, the nets and their optimizer state
PROCESS_MB = 1024


def fail(message):
    print("error: %s" % message, file=sys.stderr)
    sys.exit(2)


def resolve_script(script):
    """The training script as an absolute path: as given, else relative to the repository root."""
    for candidate in (script, os.path.join(REPO_ROOT, script)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    fail("unknown script %r (not found in the current directory nor in %s)" % (script, REPO_ROOT))


def split_passthrough(argv):
    """Everything after the first `--` belongs to the training script."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def flag_name(token):
    """The flag a training-script token names, hyphenated: tyro takes `--buffer_size 5`, `--buffer-size=5` and
    `--buffer-size 5` alike, so every check here compares this spelling; None for a value."""
    return token.split("=")[0].replace("_", "-") if token.startswith("--") else None


def has_flag(flags, name):
    """Whether the hyphenated flag `name` is among `flags`, in either spelling."""
    return name in map(flag_name, flags)


def parse_args(argv):
    own, passthrough = split_passthrough(argv)
    parser = argparse.ArgumentParser(
        description="Run (env, seed) training jobs in parallel; flags after `--` go to the training script.",
        usage="%(prog)s --envs ENV [ENV ...] [--seeds S [S ...]] [options] [-- SCRIPT_FLAGS ...]",
    )
    parser.add_argument("--envs", nargs="+", required=True, help="environment ids, e.g. Hopper-v4 HalfCheetah-v4")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5], help="seeds (default: 1 2 3 4 5, as in the paper)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="jobs at once (default: number of cores)")
    parser.add_argument("--script", default=DEFAULT_SCRIPT, help="training script (default: %(default)s)")
    parser.add_argument("--env-flag", default="--env-id", help="the script's flag that takes the environment, written with = (e.g. --env-flag=--task; default: %(default)s)")
    parser.add_argument("--exp-name", help="passed to the script as --exp-name (default: the script's own, its file name)")
    parser.add_argument("--workdir", default=".", help="jobs run here: runs/ and logs/ are created in it (default: current directory)")
    parser.add_argument("--status-every", type=float, default=60.0, help="seconds between progress reports (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue each job from its newest checkpoint.pt under WORKDIR/runs; skip the finished ones")
    parser.add_argument("--slurm", metavar="FILE", help="write a SLURM array script (one task per job) to FILE instead of running the jobs; submit it with sbatch FILE")
    args = parser.parse_args(own)
    args.passthrough = passthrough
    if args.slurm and args.resume:
        fail("--resume does not go with --slurm: every array task resumes its own job")
    if args.jobs < 1:
        fail("--jobs must be >= 1 (got %d)" % args.jobs)
    for what, values in (("--envs", args.envs), ("--seeds", args.seeds)):
        if len(set(values)) != len(values):
            fail("%s has duplicates: %s" % (what, " ".join(map(str, values))))
    clashing = [f for f in passthrough if flag_name(f) in OWN_FLAGS + (flag_name(args.env_flag),)]
    if clashing:
        fail("%s is set by run_seeds.py itself; use --envs/--seeds/--exp-name instead" % clashing[0])
    args.script = resolve_script(args.script)
    return args


def make_jobs(args):
    exp_name = args.exp_name or os.path.splitext(os.path.basename(args.script))[0]
    log_dir = os.path.join(os.path.abspath(args.workdir), "logs")
    jobs = []
    for env_id in args.envs:
        for seed in args.seeds:
            command = [sys.executable, args.script, args.env_flag, env_id, "--seed", str(seed)]
            if args.exp_name:
                command += ["--exp-name", args.exp_name]
            name = "%s__%s__%d" % (env_id, exp_name, seed)
            resumed = False
            if args.resume:
                run_dir = newest_run_dir(args.workdir, env_id, exp_name, seed)
                if run_dir and os.path.isfile(os.path.join(run_dir, exp_name + ".pt")):
                    print("skipping %s: finished (%s)" % (name, os.path.join(run_dir, exp_name + ".pt")), flush=True)
                    continue
                if run_dir and os.path.isfile(os.path.join(run_dir, "checkpoint.pt")):
                    command += ["--resume", os.path.join(run_dir, "checkpoint.pt")]
                    resumed = True
            if args.resume and not resumed and not has_flag(args.passthrough, "--save-model"):
                print("warning: %s starts afresh without --save-model after --: it will write no checkpoint to resume from" % name, file=sys.stderr)
            jobs.append(Job(env_id, seed, name, os.path.join(log_dir, name + ".log"), tuple(command + args.passthrough), resumed))
    return jobs


def newest_run_dir(workdir, env_id, exp_name, seed):
    """The newest WORKDIR/runs/{env_id}__{exp_name}__{seed}__{time} directory, or None."""
    runs = os.path.join(os.path.abspath(workdir), "runs")
    prefix = "%s__%s__%d__" % (env_id, exp_name, seed)
    found = [d for d in (os.listdir(runs) if os.path.isdir(runs) else []) if d.startswith(prefix) and d[len(prefix):].isdigit()]
    return os.path.join(runs, max(found, key=lambda d: int(d[len(prefix):]))) if found else None


def job_environment(parallel):
    env = dict(os.environ)
    # the logs are read while the job runs, so its prints must not sit in a buffer
    env["PYTHONUNBUFFERED"] = "1"
    if parallel:
        # the nets are small: several jobs each using every core only fight over the cores;
        # a value the user exported is kept
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("MKL_NUM_THREADS", "1")
    return env


def tail(path, n):
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n") for line in collections.deque(f, maxlen=n)]
    except OSError:
        return []


def last_progress_line(path):
    """The training script prints `step N/TOTAL | SPS ...` every --log-frequency steps."""
    lines = [line for line in tail(path, 50) if line.startswith("step ")]
    return lines[-1] if lines else "starting"


def format_duration(seconds):
    seconds = int(seconds)
    return "%dh%02dm%02ds" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def run(args, jobs):
    workdir = os.path.abspath(args.workdir)
    os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
    env = job_environment(parallel=min(args.jobs, len(jobs)) > 1)
    pending = collections.deque(jobs)
    running = {}  # job -> (Popen, start time, open log file)
    done, failed, stopped = [], [], []
    start = last_status = time.time()
    stop_signal = []  # SIGTERM or SIGUSR1, once received: passed on to the running jobs, and no job starts after it

    def pass_on(signum, frame):
        stop_signal.append(signum)
        for proc, _, _ in running.values():
            proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, pass_on)

    def status(with_progress):
        print(
            "[%s] %d/%d finished, %d running, %d failed, %d pending"
            % (format_duration(time.time() - start), len(done) + len(failed), len(jobs), len(running), len(failed), len(pending)),
            flush=True,
        )
        if with_progress:
            for job in running:
                print("    %s: %s" % (job.name, last_progress_line(job.log_path)), flush=True)

    try:
        while running or (pending and not stop_signal):
            while pending and len(running) < args.jobs and not stop_signal:
                job = pending.popleft()
                log = open(job.log_path, "a" if args.resume else "w")  # --resume: every earlier attempt's log stays
                log.write("$ cd %s && %s\n" % (workdir, " ".join(job.command)))
                log.flush()
                proc = subprocess.Popen(job.command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                running[job] = (proc, time.time(), log)
                if stop_signal:  # it came while the job was starting, before pass_on could see the job
                    proc.send_signal(stop_signal[0])
                print("%s %s (log: %s)" % ("resumed" if job.resumed else "started", job.name, job.log_path), flush=True)
            time.sleep(0.5)
            for job, (proc, started, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[job]
                took = format_duration(time.time() - started)
                if proc.returncode == 0:
                    done.append(job)
                    print("finished %s in %s" % (job.name, took), flush=True)
                elif stop_signal and proc.returncode in (128 + stop_signal[0], -stop_signal[0]):
                    stopped.append(job)
                    print("stopped %s after %s by %s (exit code %d)" % (job.name, took, signal.Signals(stop_signal[0]).name, proc.returncode), flush=True)
                else:
                    failed.append((job, proc.returncode))
                    print("FAILED %s after %s (exit code %d)" % (job.name, took, proc.returncode), flush=True)
                status(with_progress=False)
            if running and time.time() - last_status >= args.status_every:
                last_status = time.time()
                status(with_progress=True)
    except KeyboardInterrupt:
        print("interrupted: stopping %d running job(s)" % len(running), file=sys.stderr)
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, log in running.values():
            proc.wait()
            log.close()
        sys.exit(130)
    return done, failed, stopped, stop_signal[0] if stop_signal else None


def report(jobs, done, failed, stopped, workdir):
    print("\n%d/%d jobs succeeded; run directories are in %s" % (len(done), len(jobs), os.path.join(os.path.abspath(workdir), "runs")))
    if stopped or len(done) + len(failed) < len(jobs):
        print("%d stopped by a signal, %d not started: the same command with --resume continues them%s"
              % (len(stopped), len(jobs) - len(done) - len(failed) - len(stopped),
                 "" if any(job.resumed or has_flag(job.command, "--save-model") for job in jobs)
                 else " (from the start: without --save-model there are no checkpoints)"))
    for job, code in failed:
        how = "killed by signal %d" % -code if code < 0 else "exit code %d" % code
        print("\nFAILED %s (%s); last lines of %s:" % (job.name, how, job.log_path))
        for line in tail(job.log_path, 15):
            print("    " + line)


def flag_value(flags, name):
    """The value of the hyphenated flag `name` among the training script's flags (`name V` or `name=V`, in
    either spelling; the last one given, which is the one tyro takes), or None."""
    value = None
    for i, flag in enumerate(flags):
        if flag_name(flag) == name:
            if "=" in flag:
                value = flag.split("=", 1)[1]
            elif i + 1 < len(flags):
                value = flags[i + 1]
    return value


def task_memory_mb(args):
    """Memory for one job of a script whose replay buffer holds --buffer-size float32 rows of (obs,
    action, reward, next obs, terminated), as meow_continuous_action.py's: the largest env's buffer,
    twice with --save-buffer (while a checkpoint is written, and while a resumed run fills its buffer from
    the loaded one: neither copy outlives that, as tests/test_training.py checks), plus PROCESS_MB. None
    for a script without --buffer-size."""
    sys.path.insert(0, os.path.dirname(args.script))  # for what the script imports from beside it (flow_layers.py)
    spec = importlib.util.spec_from_file_location("training_script", args.script)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    if "buffer_size" not in {field.name for field in dataclasses.fields(script.Args)}:
        return None
    import gymnasium as gym

    value = flag_value(args.passthrough, "--buffer-size")
    if value is not None and not value.isdigit():
        fail("--buffer-size takes a number of transitions (got %r)" % value)
    buffer_size = script.Args.buffer_size if value is None else int(value)
    widths = []
    for env_id in args.envs:
        try:
            env = gym.make(env_id)
        except gym.error.Error as e:
            fail("cannot make %s to size its replay buffer: %s" % (env_id, e))
        widths.append(2 * env.observation_space.shape[0] + env.action_space.shape[0] + 2)
        env.close()
    copies = 2 if has_flag(args.passthrough, "--save-buffer") else 1
    return PROCESS_MB + math.ceil(copies * buffer_size * max(widths) * 4 / 2**20)


def write_slurm_array(args, jobs):
    """--slurm FILE: an sbatch script with one array task per job; each task runs this tool with --resume for its job."""
    memory = task_memory_mb(args)
    workdir = os.path.abspath(args.workdir)
    own = ["--jobs", "1", "--resume", "--script", args.script, "--env-flag=" + args.env_flag, "--workdir", workdir, "--status-every", str(args.status_every)]
    if args.exp_name:
        own += ["--exp-name", args.exp_name]
    run = [sys.executable, os.path.abspath(__file__)]
    last = len(jobs) - 1
    lines = [
        "#!/bin/bash",
        "# Written by benchmarks/run_seeds.py --slurm: one array task per (env, seed) job. Submit with",
        "#     sbatch %s" % shlex.quote(args.slurm),
        "# (sbatch options given there win over the lines below: --time, --partition, --gres=gpu:1 ...).",
        "# Each task runs run_seeds.py --resume for its job: it continues from the job's newest checkpoint.pt",
        "# when it starts (a re-queued task resumes), and ends at once if the job's final model exists. SLURM",
        "# pre-empts with SIGTERM and warns of the time limit with SIGUSR1: a run with --save-model then writes",
        "# a checkpoint and stops (submit the file again to go on after a time limit).",
        # sbatch reads these lines as a shell would: a space or a # in a path must be quoted
        "#SBATCH --job-name=%s" % shlex.quote(os.path.splitext(os.path.basename(args.script))[0]),
        "#SBATCH --array=0-%d" % last,
        "#SBATCH --cpus-per-task=1",
    ]
    if memory is not None:
        lines.append("#SBATCH --mem=%dM" % memory)
    lines += [
        "#SBATCH --requeue",
        "#SBATCH --signal=%s" % SLURM_WARNING,
        "#SBATCH --output=%s" % shlex.quote(os.path.join(workdir, "logs", "slurm-%A_%a.out")),
        "#SBATCH --open-mode=append",  # a re-queued task adds to its output
        "set -euo pipefail",
        'case "${SLURM_ARRAY_TASK_ID:?is not set: submit this file with sbatch}" in',
    ]
    lines += ["    %d) job=(%s) ;;" % (i, shlex.join(["--envs", job.env_id, "--seeds", str(job.seed)])) for i, job in enumerate(jobs)]
    lines += [
        '    *) echo "error: this array has tasks 0-%d, not $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;' % last,
        "esac",
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}" MKL_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        'exec %s "${job[@]}" %s -- %s' % (shlex.join(run), shlex.join(own), shlex.join(args.passthrough)),
    ]
    os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)  # sbatch does not create the --output folder
    with open(args.slurm, "w") as f:
        f.write("\n".join(lines) + "\n")
    if not has_flag(args.passthrough, "--save-model"):
        print("warning: without --save-model after --, the tasks write no checkpoints: a pre-empted or re-queued task starts over", file=sys.stderr)
    print("wrote %s: %d array tasks (%s), %s per task; submit it with: sbatch %s"
          % (args.slurm, len(jobs), ", ".join(job.name for job in jobs),
             "--mem=%dM" % memory if memory is not None else "no --mem (give sbatch --mem=...)", args.slurm))
    return 0


def main(argv):
    args = parse_args(argv)
    jobs = make_jobs(args)
    if args.slurm:
        return write_slurm_array(args, jobs)
    done, failed, stopped, stop_signal = run(args, jobs)
    report(jobs, done, failed, stopped, args.workdir)
    return 128 + stop_signal if stop_signal else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
