"""Beyond one machine: tune.py workers sharing one study on a real PostgreSQL server, and run_seeds.py's
SLURM job array on a real one-node SLURM cluster. Each test brings its server up on localhost, for
itself alone, and stops it afterwards.

PostgreSQL's server refuses to run as root: as root, the test runs it as the `postgres` user (Debian's
package makes it), else as `nobody`. SLURM's daemons run as root here (SlurmUser=root), as CI does.
"""
import glob
import math
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest

from test_benchmarks_tools import BENCHMARKS, ENV, TINY, evals, read_csv, run_tool

import run_seeds  # noqa: E402  (benchmarks/, on the path since test_benchmarks_tools)
import tune as tune_tool  # noqa: E402

# seconds between a running trial's heartbeats: a worker silent for two of them counts as dead
HEARTBEAT = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid):
    """True while the process exists and is not a zombie (an orphan may wait a while to be reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError("timed out after %d s waiting for %s" % (timeout, what))
        time.sleep(0.2)


# ------------------------------------------------------------------ PostgreSQL
def postgres_bindir():
    """The newest Debian server install (/usr/lib/postgresql/N/bin), else the directory of pg_ctl on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(re.sub(r"\D", "", d) or 0), reverse=True)
    if shutil.which("pg_ctl"):
        found.append(os.path.dirname(os.path.realpath(shutil.which("pg_ctl"))))
    for bindir in found:
        if all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres", "createdb")):
            return bindir
    return None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 with an empty database; yields its SQLAlchemy URL."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres); .ci/run installs Debian's postgresql package")
    as_server = []
    root = tempfile.mkdtemp(prefix="meow-pg-")  # not under pytest's tmp_path: the server's user must reach it
    if os.geteuid() == 0:
        user = "postgres" if "postgres" in {p.pw_name for p in pwd.getpwall()} else "nobody"
        shutil.chown(root, user)
        as_server = ["runuser", "-u", user, "--"]
    data, port = os.path.join(root, "data"), free_port()

    def server(*command):
        subprocess.run(as_server + [os.path.join(bindir, command[0]), *command[1:]], cwd=root, check=True, capture_output=True, timeout=120)

    try:
        server("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        server("pg_ctl", "-D", data, "-l", os.path.join(root, "server.log"), "-w", "-t", "60",
               "-o", "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off" % (port, root), "start")
        server("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "meow")
        yield "postgresql://postgres@127.0.0.1:%d/meow" % port
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            server("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root)


def tune(args, cwd):
    return subprocess.Popen([sys.executable, os.path.join(BENCHMARKS, "tune.py"), *args], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def started_trials(stdout):
    return [int(n) for n in re.findall(r"^trial (\d+)\b.*\(log: ", stdout, flags=re.M)]


def test_two_tune_workers_share_one_study_on_a_postgresql_server(postgres, tmp_path, capsys):
    args = ["--storage", postgres, "--study-name", "shared", "--workdir", "trials", "--n-trials", "2", "--last-evals", "2",
            "--heartbeat-interval", str(HEARTBEAT), "--", *TINY]
    workers = [tune(args, tmp_path) for _ in range(2)]  # at once, one trial directory tree
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, out + err

    study = optuna.load_study(study_name="shared", storage=postgres)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    # each worker ran two trials, and no trial number was run by both, nor twice by one
    starts = [started_trials(out) for out, _ in outputs]
    assert [len(s) for s in starts] == [2, 2] and sorted(starts[0] + starts[1]) == [0, 1, 2, 3]
    for trial in study.trials:
        assert trial.user_attrs["log"] == str(tmp_path / "trials" / "shared" / ("trial_%d" % trial.number) / "train.log")
        assert len(os.listdir(os.path.dirname(trial.user_attrs["run_dir"]))) == 1  # one run in its directory
        scores = evals(trial.user_attrs["run_dir"])
        assert trial.value == pytest.approx((scores[200] + scores[400]) / 2, rel=1e-6)

    # a third process, a worker of no trial, reads the best trial back from the server
    reader = tune(["--storage", postgres, "--study-name", "shared", "--n-trials", "0", "--last-evals", "2"], tmp_path)
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, out + err
    best = max(study.trials, key=lambda t: t.value)
    assert "study 'shared' in %s: 4 COMPLETE" % postgres in out
    assert "best trial %d: mean eval/return over the last 2 evaluations = %.2f" % (best.number, best.value) in out
    assert "--alpha=%.6g --tau=%.6g --sigma-max=%.6g" % (best.params["alpha"], best.params["tau"], best.params["sigma_max"]) in out
    with pytest.raises(SystemExit) as exit:
        tune_tool.main(["--storage", postgres, "--study-name", "no-such-study", "--n-trials", "0"])
    assert exit.value.code == 2 and capsys.readouterr().err == "error: no study 'no-such-study' in %s\n" % postgres


def test_a_worker_killed_mid_trial_leaves_a_failed_trial_that_another_worker_runs_again(postgres, tmp_path):
    args = ["--storage", postgres, "--study-name", "killed", "--workdir", "trials", "--n-trials", "1", "--last-evals", "2",
            "--heartbeat-interval", str(HEARTBEAT)]
    log = tmp_path / "trials" / "killed" / "trial_0" / "train.log"
    doomed = tune(args + ["--", "--total-timesteps", "100000", "--log-frequency", "100"], tmp_path)
    wait_for(lambda: log.exists() and "step 100/" in log.read_text(), 120, "trial 0 to train")
    with open("/proc/%d/task/%d/children" % (doomed.pid, doomed.pid)) as f:
        (training,) = map(int, f.read().split())
    doomed.send_signal(signal.SIGKILL)  # no handler, no clean-up: as when its machine dies
    doomed.communicate(timeout=60)
    wait_for(lambda: not alive(training), 10, "the killed worker's training run to end")

    study = optuna.load_study(study_name="killed", storage=postgres)
    (killed,) = study.trials
    assert killed.state == optuna.trial.TrialState.RUNNING  # as the dead worker left it
    time.sleep(2 * HEARTBEAT)  # its heartbeat is now stale
    survivor = tune(args + ["--", *TINY], tmp_path)
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out + err
    assert "trial 1 (trial 0 again: its worker died)" in out

    study = optuna.load_study(study_name="killed", storage=postgres)
    failed, retried = study.trials
    assert failed.state == optuna.trial.TrialState.FAIL and retried.state == optuna.trial.TrialState.COMPLETE
    assert retried.params == killed.params and retried.system_attrs["failed_trial"] == 0
    assert "run_dir" not in failed.user_attrs and "step 100/100000" in log.read_text()


# ------------------------------------------------------------------ SLURM
def test_the_slurm_array_script_has_one_task_per_job_and_memory_for_the_replay_buffer(tmp_path):
    own = ["--envs", "Hopper-v4", "Humanoid-v4", "--seeds", "1", "2", "--slurm", "seeds.sbatch"]
    flags = ["--total-timesteps", "1000000", "--save-model", "--save-buffer"]
    result = run_tool("run_seeds.py", own + ["--"] + flags, tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "seeds.sbatch"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    text = path.read_text()
    assert "#SBATCH --array=0-3" in text
    # the order of a local run's jobs: environments, then seeds
    tasks = re.findall(r"^ +(\d+)\) job=\(--envs (\S+) --seeds (\d+)\) ;;$", text, flags=re.M)
    assert tasks == [("0", "Hopper-v4", "1"), ("1", "Hopper-v4", "2"), ("2", "Humanoid-v4", "1"), ("3", "Humanoid-v4", "2")]
    # Humanoid-v4 has 376 observations and 17 actions: rows of 2 * 376 + 17 + 2 float32; a million of them,
    # twice (a checkpoint copies the buffer), and 1 GiB for the rest of the process
    assert "#SBATCH --mem=%dM" % (1024 + math.ceil(2 * 10**6 * 771 * 4 / 2**20)) in text
    assert re.search(r"^exec .*run_seeds\.py \"\$\{job\[@\]\}\" --jobs 1 --resume .* -- %s$" % " ".join(flags), text, flags=re.M)
    assert (tmp_path / "logs").is_dir()  # sbatch would not make the folder of its --output file
    outside = subprocess.run(["bash", str(path)], capture_output=True, text=True, env={k: v for k, v in ENV.items() if not k.startswith("SLURM_")})
    assert outside.returncode != 0 and "SLURM_ARRAY_TASK_ID: is not set: submit this file with sbatch" in outside.stderr


def test_the_slurm_array_of_the_batched_script_leaves_memory_to_sbatch_and_resume_is_refused(tmp_path, capsys):
    own = ["--script", "meow_isaacgym.py", "--env-flag=--task", "--envs", "Ant", "--slurm", str(tmp_path / "isaac.sbatch")]
    assert run_seeds.task_memory_mb(run_seeds.parse_args(own)) is None  # its replay buffer lives on the GPU
    with pytest.raises(SystemExit) as exit:
        run_seeds.parse_args(own + ["--resume"])
    assert exit.value.code == 2 and capsys.readouterr().err == "error: --resume does not go with --slurm: every array task resumes its own job\n"


@pytest.fixture(scope="module")
def slurm():
    """A one-node SLURM cluster on 127.0.0.1 (munged, slurmctld, slurmd, all under a temporary folder);
    yields the environment for its client commands."""
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo") if not shutil.which(tool)]
    if missing:
        pytest.skip("no %s: .ci/run installs Debian's slurmctld, slurmd, slurm-client and munge" % ", ".join(missing))
    if os.geteuid() != 0:
        pytest.skip("this test runs SLURM's daemons as root")
    root = tempfile.mkdtemp(prefix="meow-slurm-")
    os.chmod(root, 0o755)  # munged wants its socket's folder open to all
    key = os.path.join(root, "munge.key")
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(os.urandom(1024))
    host = socket.gethostname().split(".")[0]
    conf = os.path.join(root, "slurm.conf")
    with open(conf, "w") as f:
        f.write("\n".join([
            "ClusterName=meowtest",
            "SlurmctldHost=%s(127.0.0.1)" % host,
            "SlurmctldPort=%d" % free_port(),
            "SlurmdPort=%d" % free_port(),
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "AuthInfo=socket=%s" % os.path.join(root, "munge.socket"),
            "StateSaveLocation=%s" % os.path.join(root, "state"),
            "SlurmdSpoolDir=%s" % os.path.join(root, "spool"),
            "SlurmctldPidFile=%s" % os.path.join(root, "slurmctld.pid"),
            "SlurmdPidFile=%s" % os.path.join(root, "slurmd.pid"),
            "SlurmctldLogFile=%s" % os.path.join(root, "slurmctld.log"),
            "SlurmdLogFile=%s" % os.path.join(root, "slurmd.log"),
            # no cgroups: the tasks are plain processes that slurmd follows by their parent ids
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "MpiDefault=none",
            "ReturnToService=2",
            "NodeName=%s NodeAddr=127.0.0.1 CPUs=%d RealMemory=4096 State=UNKNOWN" % (host, len(os.sched_getaffinity(0))),
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")
    env = dict(ENV, SLURM_CONF=conf)
    daemons = []

    def start(*command):
        log = open(os.path.join(root, os.path.basename(command[0]) + ".out"), "w")
        daemons.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        log.close()

    def idle():
        states = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout.split()
        return states == ["idle"]

    try:
        start("munged", "-F", "--key-file=" + key, "--socket=" + os.path.join(root, "munge.socket"), "--pid-file=" + os.path.join(root, "munged.pid"),
              "--log-file=" + os.path.join(root, "munged.log"), "--seed-file=" + os.path.join(root, "munged.seed"))
        wait_for(lambda: os.path.exists(os.path.join(root, "munge.socket")), 30, "munged")
        start("slurmctld", "-D", "-f", conf)
        start("slurmd", "-D", "-f", conf)
        wait_for(idle, 60, "the node to be idle")
        yield env
    finally:
        subprocess.run(["scancel", "--user=root"], env=env)
        try:
            wait_for(lambda: not subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip(), 60, "the queue to empty")
        finally:
            for daemon in reversed(daemons):
                daemon.terminate()
                daemon.wait(timeout=60)
            shutil.rmtree(root)


def test_the_slurm_array_trains_and_exports_what_a_local_run_does_and_a_requeued_task_resumes(slurm, tmp_path):
    own = ["--envs", "Hopper-v4", "--seeds", "1", "2"]
    # 600 steps, a checkpoint at the first episode end after every 100, and the buffer in it: a resumed
    # run ends as the uninterrupted one does
    flags = TINY + ["--total-timesteps", "600", "--log-frequency", "100", "--save-model", "--save-buffer", "--checkpoint-frequency", "100"]
    local = subprocess.Popen([sys.executable, os.path.join(BENCHMARKS, "run_seeds.py"), *own, "--jobs", "2", "--workdir", "local", "--", *flags],
                             cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cluster = "cluster #1"  # sbatch reads its #SBATCH lines as a shell would: a space and a # must reach it quoted
    written = run_tool("run_seeds.py", own + ["--workdir", cluster, "--slurm", "seeds.sbatch", "--"] + flags, tmp_path)
    assert written.returncode == 0, written.stderr

    def slurm_run(*command):
        result = subprocess.run(command, cwd=tmp_path, env=slurm, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    job = slurm_run("sbatch", "--parsable", "seeds.sbatch")
    log = tmp_path / cluster / "logs" / "Hopper-v4__meow_continuous_action__2.log"
    wait_for(lambda: log.exists() and "step 200/600" in log.read_text(), 300, "task 1 to train")
    # as a pre-emption does: SIGTERM to the task's processes, and the task back in the queue (SLURM holds
    # a re-queued job for two minutes; the test lets it start at once)
    slurm_run("scontrol", "requeue", "%s_1" % job)
    wait_for(lambda: slurm_run("squeue", "-h", "-j", "%s_1" % job, "-o", "%T") == "PENDING", 120, "task 1 to be re-queued")
    slurm_run("scontrol", "update", "jobid=%s_1" % job, "StartTime=now")
    wait_for(lambda: not slurm_run("squeue", "-h", "-j", job), 300, "the array to finish")
    out, _ = local.communicate(timeout=300)
    assert local.returncode == 0, out

    text = log.read_text()
    (stopped_at,) = map(int, re.findall(r"^SIGTERM: checkpoint at step (\d+) written", text, flags=re.M))
    assert 200 <= stopped_at < 600 and "resuming Hopper-v4__meow_continuous_action__2__" in text and "from step %d" % stopped_at in text
    assert text.count("step 600/600") == 1 and "step 100/600" in text.split("resuming")[0] and "step 100/600" not in text.split("resuming")[1]
    assert len(glob.glob(str(tmp_path / cluster / "logs" / ("slurm-%s_*.out" % job)))) == 2  # SLURM's own output, where --output says
    for workdir in ("local", cluster):
        runs = sorted(os.listdir(tmp_path / workdir / "runs"))
        assert [r.split("__")[2] for r in runs] == ["1", "2"]  # one run per seed: the re-queued task went on in its own
        assert all(os.path.exists(tmp_path / workdir / "runs" / r / "meow_continuous_action.pt") for r in runs)
        exported = run_tool("plot.py", ["--export", "%s/runs" % workdir, "--commit", "abc1234", "--csv", "%s.csv" % workdir], tmp_path)
        assert exported.returncode == 0, exported.stderr
    assert read_csv(tmp_path / ("%s.csv" % cluster)) == read_csv(tmp_path / "local.csv")
    assert [row[:3] for row in read_csv(tmp_path / "local.csv")][1:] == [["Hopper-v4", seed, step] for seed in "12" for step in ("200", "400", "600")]
