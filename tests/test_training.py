"""The training loop: replay buffer, episode boundaries, end-to-end runs, checkpoints, bad input."""
import glob
import os
import re
import signal
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import meow_continuous_action as meow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = os.path.join(ROOT, "meow_continuous_action.py")
TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/qf_loss", "eval/return"]
DIAGNOSTICS = ["losses/q_values", "losses/v_values", "charts/entropy", "charts/prior_log_std", "charts/action_saturation"]
BIAS = ["bias/q_value", "bias/soft_return", "bias/normalised"]  # at log points where a measured episode has ended


# ------------------------------------------------------------------ replay buffer
def test_replay_buffer_wraps_around_and_keeps_fields_apart():
    rb = meow.ReplayBuffer(5, obs_dim=2, act_dim=1, device="cpu")
    for start in (0, 3):  # 3 rows, then 4 more: the second add wraps past the end
        n = 3 if start == 0 else 4
        ids = torch.arange(start, start + n, dtype=torch.float32)
        rb.add(ids[:, None].repeat(1, 2), -ids[:, None], 10 * ids, ids[:, None].repeat(1, 2) + 0.5, (ids % 2 == 0).float())
    assert rb.size == 5 and rb.pos == 2
    assert rb.data[:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]  # rows 0 and 1 overwritten by ids 5, 6
    batch = rb.sample(1000)
    assert set(batch.obs[:, 0].tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0}
    assert torch.equal(batch.actions[:, 0], -batch.obs[:, 0])
    assert torch.equal(batch.rewards, 10 * batch.obs[:, 0])
    assert torch.equal(batch.next_obs, batch.obs + 0.5)
    assert torch.equal(batch.terminated, (batch.obs[:, 0] % 2 == 0).float())
    with pytest.raises(ValueError):
        rb.add(*(torch.zeros(6, d) for d in (2, 1)), torch.zeros(6), torch.zeros(6, 2), torch.zeros(6))


# ------------------------------------------------------------------ episode boundaries
class CountingEnv(gym.Env):
    """obs = (t, episode id). Episodes with an even id terminate at t = 5; odd ones run into the time limit (8).

    The id is drawn from the env's RNG, so between episodes the RNG is all of the env's state, as in MuJoCo.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode = int(self.np_random.integers(0, 1000))
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.t, self.episode], dtype=np.float32)

    def step(self, action):
        assert -2.0 <= float(action[0]) <= 2.0  # RescaleAction maps the flow's (-1, 1) onto the box
        self.t += 1
        return self._obs(), 1.0, self.episode % 2 == 0 and self.t == 5, False, {}


gym.register("MeowCounting-v0", entry_point=CountingEnv, max_episode_steps=8)


def tiny_args(**overrides):
    kwargs = dict(env_id="MeowCounting-v0", total_timesteps=160, learning_starts=40, batch_size=16, buffer_size=1000,
                  eval_frequency=40, eval_episodes=1, log_frequency=20, save_model=True, save_buffer=True,
                  checkpoint_frequency=100)
    kwargs.update(overrides)
    return meow.Args(**kwargs)


def test_no_transition_crosses_an_episode_boundary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    meow.main(tiny_args())
    (ckpt_path,) = glob.glob("runs/*/checkpoint.pt")
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert 100 <= ckpt["step"] < 110  # at the first episode end after step 100
    rows = ckpt["buffer"]["data"]
    assert ckpt["buffer"]["size"] == len(rows) == ckpt["step"]
    obs, next_obs, terminated = rows[:, 0:2], rows[:, 4:6], rows[:, 6]
    assert torch.equal(next_obs[:, 1], obs[:, 1])  # same episode on both sides of every transition
    assert torch.equal(next_obs[:, 0], obs[:, 0] + 1)
    ends = next_obs[:, 0]
    even = obs[:, 1] % 2 == 0
    # terminations are flagged, time-outs (t = 8 in odd episodes) keep terminated = 0 and so bootstrap
    assert torch.equal(terminated, (even & (ends == 5)).float())
    assert ((~even) & (ends == 8)).sum() >= 3 and terminated[(~even) & (ends == 8)].sum() == 0
    assert (even & (ends == 5)).sum() >= 3
    assert (rows[:, 2].abs() <= 1).all()  # stored actions are the flow's, in (-1, 1)


def scalars(run_dir, tag):
    acc = EventAccumulator(run_dir)
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_a_resumed_run_keeps_what_was_logged_at_its_checkpoints_step(tmp_path, monkeypatch):
    # with seed 1 an episode ends at step 102: the evaluation and the log at 102 come before the checkpoint
    # taken at that episode end, so the resumed run does not log them again and must not hide them
    monkeypatch.chdir(tmp_path)
    meow.main(tiny_args(eval_frequency=51, log_frequency=51))
    (run_dir,) = glob.glob("runs/*")
    assert torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)["step"] == 102
    meow.main(meow.Args(resume=os.path.join(run_dir, "checkpoint.pt")))
    assert [s for s, _ in scalars(run_dir, "eval/return")] == [51, 102, 153]
    assert [s for s, _ in scalars(run_dir, "losses/qf_loss")] == [51, 102, 153, 160]


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    meow.main(tiny_args())
    (run_dir,) = glob.glob("runs/*")
    uninterrupted = torch.load(os.path.join(run_dir, "meow_continuous_action.pt"), weights_only=False)["model"]
    evals_before = scalars(run_dir, "eval/return")
    bias_tags = ("bias/q_value", "bias/soft_return", "bias/normalised")
    bias_before = {tag: scalars(run_dir, tag) for tag in bias_tags}
    # the checkpoint left on disk is the one a run killed after it would resume from
    meow.main(meow.Args(resume=os.path.join(run_dir, "checkpoint.pt")))
    resumed = torch.load(os.path.join(run_dir, "meow_continuous_action.pt"), weights_only=False)["model"]
    for key in uninterrupted:
        assert torch.allclose(uninterrupted[key], resumed[key], atol=1e-6), key
    evals_after = scalars(run_dir, "eval/return")
    steps = [s for s, _ in evals_after]
    assert steps == sorted(set(steps)) == [40, 80, 120, 160]  # no gap, no duplicate
    assert np.allclose([v for _, v in evals_after], [v for _, v in evals_before], atol=1e-4)
    # the log point after the checkpoint measures the episodes finished on both sides of it, as the uninterrupted run's did
    for tag in bias_tags:
        after = scalars(run_dir, tag)
        assert [s for s, _ in after] == [s for s, _ in bias_before[tag]] and len(after) >= 5, tag
        assert np.allclose([v for _, v in after], [v for _, v in bias_before[tag]], rtol=1e-5, atol=1e-5), tag


def test_a_run_resumed_near_its_end_compiles_as_the_uninterrupted_one_did(tmp_path, monkeypatch):
    # compiled and eager updates agree only to float32 rounding: a resumed run that switched path would
    # part from the uninterrupted one; the tiny run's 120 updates stand for a run long enough to compile
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(meow, "COMPILE_MIN_UPDATES", 100)
    enabled = []
    monkeypatch.setattr(meow, "maybe_compile", lambda fn, on, device, what: enabled.append(on) or fn)
    meow.main(tiny_args())
    assert enabled == [True, True]  # the update and the action sampling
    (ckpt,) = glob.glob("runs/*/checkpoint.pt")
    assert 160 - torch.load(ckpt, weights_only=False)["step"] < 100  # fewer updates left than compiling needs
    meow.main(meow.Args(resume=ckpt))
    assert enabled == [True, True, True, True]


def test_a_resumed_run_keeps_no_copy_of_its_replay_buffer_beside_the_buffer(tmp_path, monkeypatch, watch_buffer_copies):
    # a 1M-transition Humanoid buffer is 3 GB a copy (run_seeds.py --slurm budgets two copies)
    monkeypatch.chdir(tmp_path)
    meow.main(tiny_args())
    (ckpt,) = glob.glob("runs/*/checkpoint.pt")
    checked = watch_buffer_copies(meow)
    meow.main(meow.Args(resume=ckpt, total_timesteps=400))
    assert checked[0] == ("loaded", True) and ("checkpoint", True) in checked[1:]
    assert all(freed for _, freed in checked), checked


def test_a_stop_signal_writes_a_checkpoint_at_the_next_episode_end_and_the_resumed_run_ends_as_an_unstopped_one(tmp_path, monkeypatch, capsys):
    args = dict(total_timesteps=120, checkpoint_frequency=1000)  # no scheduled checkpoint before the end
    monkeypatch.chdir(tmp_path)
    meow.main(tiny_args(**args))
    (unstopped,) = glob.glob(str(tmp_path / "runs" / "*" / "meow_continuous_action.pt"))
    (tmp_path / "stopped").mkdir()
    monkeypatch.chdir(tmp_path / "stopped")
    original, steps = CountingEnv.step, {}

    def step_then_signal(env, action):
        steps[env] = steps.get(env, 0) + 1
        if env is next(iter(steps)) and steps[env] == 61:  # the training env steps first (the eval env from step 40)
            os.kill(os.getpid(), signal.SIGUSR1)  # as SLURM's warning before a time limit
        return original(env, action)

    monkeypatch.setattr(CountingEnv, "step", step_then_signal)
    with pytest.raises(SystemExit) as stopped:
        meow.main(tiny_args(**args))
    assert stopped.value.code == 128 + signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the run's handler went with it
    (run_dir,) = glob.glob("runs/*")
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    # the signal came at step 61: the checkpoint waited for that episode's end
    episode_ends = [s for s, _ in scalars(run_dir, "charts/episodic_length")]
    ckpt_step = torch.load(checkpoint, weights_only=False)["step"]
    assert ckpt_step == min(s for s in episode_ends if s >= 61) and not os.path.exists(os.path.join(run_dir, "meow_continuous_action.pt"))
    assert "SIGUSR1: checkpoint at step %d written to %s; stopping" % (ckpt_step, checkpoint) in capsys.readouterr().out

    monkeypatch.setattr(CountingEnv, "step", original)
    meow.main(meow.Args(resume=checkpoint))
    resumed = torch.load(os.path.join(run_dir, "meow_continuous_action.pt"), weights_only=False)["model"]
    expected = torch.load(unstopped, weights_only=False)["model"]
    for key in expected:
        assert torch.allclose(expected[key], resumed[key], atol=1e-6), key


# ------------------------------------------------------------------ end to end
def run_script(args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, SCRIPT] + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("hopper")
    result = run_script(["--env-id", "Hopper-v4", "--total-timesteps", "700", "--learning-starts", "300", "--eval-frequency", "700",
                         "--eval-episodes", "2", "--batch-size", "64", "--log-frequency", "100", "--save-model"], cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = glob.glob(str(cwd / "runs" / "Hopper-v4__meow_continuous_action__1__*"))
    return cwd, run_dir, result


def test_hopper_trains_evaluates_and_logs(hopper_run):
    _, run_dir, result = hopper_run
    assert "alpha=0.25" in result.stdout and "tau=0.005" in result.stdout  # the paper's Hopper values
    assert "step 700/700" in result.stdout
    acc = EventAccumulator(run_dir)
    acc.Reload()
    assert set(TAGS) <= set(acc.Tags()["scalars"])
    (evaluation,) = acc.Scalars("eval/return")
    assert evaluation.step == 700 and evaluation.value > 0
    losses = acc.Scalars("losses/qf_loss")
    assert [e.step for e in losses] == [400, 500, 600, 700]  # logged only once updates have started
    assert all(np.isfinite(e.value) for e in losses)
    for tag in DIAGNOSTICS:  # read at the same log points, finite
        points = acc.Scalars(tag)
        assert [e.step for e in points] == [400, 500, 600, 700] and all(np.isfinite(e.value) for e in points), tag
    for tag in BIAS:  # episodes that began after the random warm-up (300) and have ended
        points = acc.Scalars(tag)
        assert points and {e.step for e in points} <= {400, 500, 600, 700} and all(np.isfinite(e.value) for e in points), tag
    entropy, log_std = acc.Scalars("charts/entropy")[-1].value, acc.Scalars("charts/prior_log_std")[-1].value
    assert -5.0 <= log_std <= -0.3  # inside the paper's Hopper bounds
    assert 0.0 <= acc.Scalars("charts/action_saturation")[-1].value <= 1.0
    assert "| entropy %.2f |" % entropy in result.stdout  # the console line shows it too
    assert "hyperparameters/text_summary" in acc.Tags()["tensors"]


def test_saved_model_loads_back_into_flow_policy(hopper_run):
    _, run_dir, _ = hopper_run
    ckpt = torch.load(os.path.join(run_dir, "meow_continuous_action.pt"), weights_only=False)
    assert ckpt["args"]["env_id"] == "Hopper-v4"
    policy = meow.FlowPolicy(ckpt["obs_dim"], ckpt["act_dim"], ckpt["args"]["alpha"], ckpt["args"]["sigma_max"], ckpt["args"]["sigma_min"])
    policy.load_state_dict(ckpt["model"])
    actions, _ = policy.eval().sample(torch.zeros(1, 11), deterministic=True)
    assert actions.shape == (1, 3)


def test_eval_checkpoint_runs_the_saved_policy_without_training(hopper_run):
    cwd, run_dir, _ = hopper_run
    before = sorted(os.listdir(cwd / "runs"))
    result = run_script(["--eval-checkpoint", os.path.join(run_dir, "meow_continuous_action.pt"), "--eval-episodes", "3"], cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"eval return -?[0-9.]+ \+- [0-9.]+ over 3 episodes of [0-9]+(-[0-9]+)? steps \(deterministic policy after", result.stdout), result.stdout
    assert sorted(os.listdir(cwd / "runs")) == before  # no new run directory


def test_evaluate_counts_each_episodes_steps_to_its_termination_or_time_limit():
    class ScriptedEnv:
        """Episode 1 terminates at its 3rd step, episode 2 is cut by the time limit at its 5th; reward 1 a step."""
        def __init__(self):
            self.episode, self.t = 0, 0

        def reset(self):
            self.episode, self.t = self.episode + 1, 0
            return np.zeros(2, dtype=np.float32), {}

        def step(self, action):
            self.t += 1
            return np.zeros(2, dtype=np.float32), 1.0, self.episode == 1 and self.t == 3, self.episode == 2 and self.t == 5, {}

    class Policy:
        def sample(self, obs, deterministic):
            assert deterministic
            return torch.zeros(1, 1), None

    assert meow.evaluate(Policy(), ScriptedEnv(), 2, "cpu") == ([3.0, 5.0], [3, 5])


def test_paper_defaults_resolve_per_environment_and_flags_win():
    args = meow.Args(env_id="Ant-v5", tau=0.01)
    line = meow.resolve_defaults(args)
    assert line.startswith("defaults: the paper's Ant row (MuJoCo table): ") and "alpha=0.05" in line and "tau=" not in line
    assert (args.alpha, args.tau, args.learning_starts, args.total_timesteps) == (0.05, 0.01, 5000, 4_000_000)
    other = meow.Args(env_id="Pusher-v5")
    assert meow.resolve_defaults(other).startswith("defaults: no paper row for Pusher-v5: the Hopper row (MuJoCo table)")
    assert (other.alpha, other.sigma_max) == (0.25, -0.3)
    explicit = meow.Args(env_id="Hopper-v4", alpha=0.2, tau=0.01, sigma_max=-0.3, sigma_min=-5.0, learning_starts=10, total_timesteps=100)
    assert meow.resolve_defaults(explicit) is None  # nothing came from the table: no line


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "flags,message",
    [
        (["--env-id", "CartPole-v1"], "Discrete action space"),
        (["--env-id", "NoSuchEnv-v0"], "unknown env id"),
        (["--sigma-min", "0", "--sigma-max", "-1"], "--sigma-min must be < --sigma-max"),
        (["--alpha", "0"], "--alpha must be > 0"),
        (["--batch-size", "512", "--buffer-size", "100"], "larger than --buffer-size"),
        (["--eval-checkpoint", "missing.pt"], "no checkpoint at missing.pt"),
        (["--learning-rate", "nan"], "--learning-rate must be a finite number (got nan)"),
        (["--alpha", "inf"], "--alpha must be a finite number (got inf)"),
        (["--max-grad-norm", "-inf"], "--max-grad-norm must be a finite number"),
        (["--gamma", "nan"], "--gamma must be a finite number"),
        (["--total-timesteps", "10"], "does not pass --learning-starts (5000) and --batch-size (256): the run would never update"),
    ],
)
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(tmp_path, flags, message):
    result = run_script(flags, tmp_path, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "runs")


def test_resuming_a_model_file_or_a_per_tensor_optimizer_checkpoint_fails_with_one_line(hopper_run, tmp_path):
    _, run_dir, _ = hopper_run
    model_file = os.path.join(run_dir, "meow_continuous_action.pt")
    old = torch.load(model_file, weights_only=False)
    old.update(step=100, optimizer={"state": {}, "param_groups": [{"lr": 1e-3, "params": list(range(72))}]})
    old_file = str(tmp_path / "old_checkpoint.pt")
    torch.save(old, old_file)
    for path, message in ((model_file, "is a saved model, not a checkpoint.pt"), (old_file, "one Adam state per tensor")):
        result = run_script(["--resume", path], tmp_path, timeout=120)
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "runs")


# ------------------------------------------------------------------ runs that tell the truth
def test_a_diverging_run_stops_at_once_with_one_line_and_writes_no_model(tmp_path):
    flags = ["--learning-rate", "1e4", "--max-grad-norm", "1e9", "--learning-starts", "300", "--total-timesteps", "2000",
             "--batch-size", "64", "--log-frequency", "100", "--eval-frequency", "1000", "--eval-episodes", "1",
             "--save-model", "--checkpoint-frequency", "300"]
    result = run_script(flags, tmp_path)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "training diverged at step" in lines[0] and "--learning-rate (10000)" in lines[0] and "--alpha" in lines[0]
    step = int(lines[0].split("at step ")[1].split()[0])
    assert step <= 1000  # stopped at the first log point that saw it, long before the end
    assert "step 2000/2000" not in result.stdout
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    assert not os.path.exists(os.path.join(run_dir, "meow_continuous_action.pt"))
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    if os.path.exists(checkpoint):  # a checkpoint written before the divergence is kept, and is finite
        model = torch.load(checkpoint, weights_only=False)["model"]
        assert all(torch.isfinite(v).all() for v in model.values())
    logged = scalars(run_dir, "charts/SPS")  # TensorBoard was flushed: the points before the divergence are there
    assert logged and logged[-1][0] < step


def test_eta_follows_the_recent_rate_not_the_average_since_the_start():
    rate = meow.RecentRate(0, window=3)
    for step in range(1000, 5001, 1000):  # the random-action phase: 1000 steps a second
        rate.add(step, now=step / 1000)
    rate.restart(5001, now=5.0 + 30.0)  # first update, after a 30 s compilation
    sps = [rate.add(step, now=35.0 + (step - 5001) / 100) for step in range(6000, 12001, 1000)]  # then 100 a second
    assert all(abs(s - 100) < 1e-6 for s in sps)
    # an average since the start would say 12000 / 105 s = 114 steps/s: an ETA 12% short of the truth, and
    # far more early on (the first line after learning starts: 6000 / 45 s = 133 steps/s)
    rate.add(13000, now=35.0 + 7999 / 100 + 20.0)  # one slow interval (an evaluation) moves it, within the window
    assert 55 < rate.add(14000, now=35.0 + 8999 / 100 + 20.0) < 100  # 3000 steps in 50 s
    assert meow.format_eta(float("nan")) == "?" and meow.format_eta(3725) == "1h02m05s"


def test_first_screen_has_no_warning_of_our_own_calls(tmp_path):
    """Warnings shown (python's default filter, as a user sees them) in a short Hopper-v4 run that starts learning."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)
    # the first update at step 300, a log point: the steps/s restart there, so that none is measured yet
    flags = ["--env-id", "Hopper-v4", "--total-timesteps", "400", "--learning-starts", "299", "--batch-size", "64",
             "--log-frequency", "100", "--eval-frequency", "400", "--eval-episodes", "1"]
    result = subprocess.run([sys.executable, "-W", "default", SCRIPT] + flags, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "Warning" in line or "WARN" in line]
    # gymnasium's own notice that v4 envs are superseded by v5 is the only one allowed
    assert all("Hopper-v4 is out of date" in line for line in warnings), result.stderr
    # what is not measured yet shows as "-", not as a NaN that reads like a diverged run
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert "| eval - | entropy - |" in lines[0] and " - " not in lines[-1] and "nan" not in result.stdout, result.stdout


def test_capture_video_on_a_headless_machine_writes_a_video_named_by_step(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    flags = ["--env-id", "Hopper-v4", "--capture-video", "--total-timesteps", "400", "--learning-starts", "300", "--batch-size", "64",
             "--log-frequency", "200", "--eval-frequency", "200", "--eval-episodes", "2"]
    result = subprocess.run([sys.executable, SCRIPT] + flags, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    videos = sorted(os.listdir(os.path.join(run_dir, "videos")))
    assert videos == ["step-200.mp4", "step-400.mp4"]
    import imageio.v2 as imageio

    frames = imageio.mimread(os.path.join(run_dir, "videos", "step-400.mp4"), memtest=False)
    assert len(frames) > 1 and frames[0].ndim == 3 and frames[0].std() > 0  # real, non-blank frames


@pytest.mark.parametrize("env_id", ["HalfCheetah-v4", "Hopper-v4"])
def test_rendered_frames_follow_the_agent(tmp_path, env_id):
    # the agent moved 20 m along x after the first frame: a camera that stays put films an empty floor
    code = """
import meow_continuous_action as meow
meow.check_rendering(%r)
env = meow.make_env(%r, 0, render=True)()
env.reset(seed=0)
env.render()  # the first frame places the camera
sim = env.unwrapped
qpos = sim.data.qpos.copy()
qpos[0] += 20.0
sim.set_state(qpos, sim.data.qvel)
frame = env.render().astype(int)
red, green, blue = frame[..., 0], frame[..., 1], frame[..., 2]
print(int(((red - green > 40) & (red - blue > 40)).sum()))  # the brown body; the floor and sky are not
""" % (env_id, env_id)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 500


def test_capture_video_without_a_working_renderer_stops_at_start(tmp_path):
    env = dict(os.environ, MUJOCO_GL="no-such-backend", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, SCRIPT, "--capture-video", "--total-timesteps", "400", "--learning-starts", "300"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "--capture-video cannot render Hopper-v4 with MUJOCO_GL=no-such-backend" in lines[0] and "MUJOCO_GL=egl" in lines[0]
    assert not os.path.exists(tmp_path / "runs")


def test_track_logs_to_weights_and_biases_offline(tmp_path):
    pytest.importorskip("wandb")  # in requirements.txt: CI runs this
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    flags = ["--track", "--total-timesteps", "400", "--learning-starts", "300", "--batch-size", "64", "--log-frequency", "100",
             "--eval-frequency", "400", "--eval-episodes", "1"]
    result = subprocess.run([sys.executable, SCRIPT] + flags, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (offline_run,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    (log,) = glob.glob(os.path.join(offline_run, "run-*.wandb"))
    assert os.path.getsize(log) > 0


# ------------------------------------------------------------------ shipped policies
MODELS = os.path.join(ROOT, "docs", "models")


@pytest.mark.parametrize("env_id", ["Hopper-v4", "HalfCheetah-v4", "Walker2d-v4", "Ant-v4", "Humanoid-v4"])
def test_shipped_model_loads_for_its_env(env_id):
    """docs/models/{env_id}.pt: the script's own model format, for that env's sizes, small enough to ship
    (its return is what the README reports, not tested here)."""
    path = os.path.join(MODELS, env_id + ".pt")
    assert os.path.getsize(path) < 2_500_000  # Humanoid-v4 (376 observations) is the largest, 1.9 MB
    ckpt = meow.load_checkpoint(path)
    assert ckpt["args"]["env_id"] == env_id
    env = gym.make(env_id)
    assert (ckpt["obs_dim"], ckpt["act_dim"]) == (env.observation_space.shape[0], env.action_space.shape[0])
    env.close()
    assert set(ckpt) == {"model", "args", "obs_dim", "act_dim", "step"}  # a model file, no optimizer or buffer
    # --eval-checkpoint reads only the saved args it needs, so models of older versions keep loading
    returns = meow.main(meow.Args(eval_checkpoint=path, eval_episodes=1, seed=3))
    assert len(returns) == 1 and np.isfinite(returns[0])


# ------------------------------------------------------------------ what surprises users
def test_episode_tags_share_the_x_axis_of_every_other_tag(tmp_path, monkeypatch):
    """An episode that ends with the env's 8th step is logged at step 8, as a loss read after that step is."""
    monkeypatch.chdir(tmp_path)
    meow.main(tiny_args(save_model=False))
    (run_dir,) = glob.glob("runs/*")
    lengths = scalars(run_dir, "charts/episodic_length")
    steps = [s for s, _ in lengths]
    assert steps == list(np.cumsum([int(v) for _, v in lengths]))  # each episode ends at the step count so far
    assert all(s % 20 == 0 for s, _ in scalars(run_dir, "losses/qf_loss"))


class NonFiniteEnv(CountingEnv):
    """A CountingEnv whose 12th observation is NaN, or (huge=True) finite but too large for the network, or
    (nan_reward=True) whose 12th reward is NaN."""

    huge = False
    nan_reward = False

    def reset(self, seed=None, options=None):
        self.steps = getattr(self, "steps", 0)
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        if self.steps == 12 and self.nan_reward:
            reward = float("nan")
        elif self.steps == 12:
            obs = np.full_like(obs, 3e38 if self.huge else np.nan)
        return obs, reward, terminated, truncated, info


class HugeObservationEnv(NonFiniteEnv):
    huge = True


class NaNRewardEnv(NonFiniteEnv):
    nan_reward = True


gym.register("MeowNaNObs-v0", entry_point=NonFiniteEnv, max_episode_steps=8)
gym.register("MeowHugeObs-v0", entry_point=HugeObservationEnv, max_episode_steps=8)
gym.register("MeowNaNReward-v0", entry_point=NaNRewardEnv, max_episode_steps=8)


@pytest.mark.parametrize("env_id, what, step", [("MeowNaNObs-v0", "the environment's observation is not finite at step 12", 12),
                                                ("MeowHugeObs-v0", "the policy's action is not finite at step 12", 12),
                                                ("MeowNaNReward-v0", "the environment's reward is not finite at step 12 (nan)", 12)])
def test_a_non_finite_observation_or_action_stops_the_run_with_one_line(tmp_path, monkeypatch, capsys, env_id, what, step):
    # no update before step 100 (the buffer holds no batch), so the weights and the loss stay finite
    monkeypatch.chdir(tmp_path)
    before = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)]
    with pytest.raises(SystemExit) as exit_info:
        meow.main(tiny_args(env_id=env_id, learning_starts=5, batch_size=100, save_model=True))
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: " + what), line
    # --save-model caught SIGTERM and SIGUSR1 for the run; a run stopped on an error gives them back too
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)] == before


def test_maybe_compile_falls_back_only_when_compiling_fails(monkeypatch, capsys):
    calls = []

    def fn(x):
        calls.append(x)
        return x + 1

    def broken_compile(f, dynamic=False):
        def compiled(x):
            raise RuntimeError("no C++ compiler\nmore detail")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    wrapped = meow.maybe_compile(fn, True, "cpu", "the test")
    assert wrapped(1) == 2 and wrapped(2) == 3 and calls == [1, 2]
    assert "warning: torch.compile failed (no C++ compiler); running the test eagerly" in capsys.readouterr().err

    def later_failure(f, dynamic=False):
        state = {"calls": 0}

        def compiled(x):
            state["calls"] += 1
            if state["calls"] > 1:
                raise MemoryError("out of memory")
            return f(x)
        return compiled

    monkeypatch.setattr(torch, "compile", later_failure)
    wrapped = meow.maybe_compile(fn, True, "cpu", "the test")
    assert wrapped(5) == 6
    with pytest.raises(MemoryError):
        wrapped(6)  # a mid-run error is not hidden behind an eager retry
    assert "eagerly" not in capsys.readouterr().err


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    meow.main(tiny_args(cuda=True, capture_video=False))
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))
    return path


def test_resume_takes_machine_flags_from_the_command_line_and_refuses_to_shrink(tiny_checkpoint):
    ckpt = meow.load_checkpoint(tiny_checkpoint)
    assert ckpt["args"]["cuda"] is True
    resumed, _ = meow.resume_args(meow.Args(resume=tiny_checkpoint, cuda=False, torch_threads=1, compile=False))
    assert (resumed.cuda, resumed.torch_threads, resumed.compile) == (False, 1, False)
    assert (resumed.env_id, resumed.total_timesteps, resumed.seed) == ("MeowCounting-v0", 160, 1)  # the run's own args
    for total in (ckpt["step"], ckpt["step"] - 1):
        with pytest.raises(meow.ConfigError, match="--total-timesteps \\(%d\\) must be above the checkpoint's step \\(%d\\)" % (total, ckpt["step"])):
            meow.resume_args(meow.Args(resume=tiny_checkpoint, total_timesteps=total))
    assert meow.resume_args(meow.Args(resume=tiny_checkpoint, total_timesteps=ckpt["step"] + 1))[0].total_timesteps == ckpt["step"] + 1


def test_a_meow_isaacgym_file_is_refused_not_fed_raw_observations(tiny_checkpoint, tmp_path, capsys):
    """meow_isaacgym.py saves the same network with an observation normaliser; this script has none, so
    evaluating (or filming, or resuming) such a file here would act on unstandardised observations."""
    ckpt = torch.load(tiny_checkpoint, weights_only=False)
    ckpt["obs_rms"] = {"mean": torch.zeros(1), "var": torch.ones(1), "count": torch.tensor(1.0)}
    isaac_file = str(tmp_path / "isaac_checkpoint.pt")
    torch.save(ckpt, isaac_file)
    message = "is a meow_isaacgym.py model or checkpoint (its policy reads standardised observations)"
    for call in (lambda: meow.load_policy(isaac_file), lambda: meow.evaluate_checkpoint(meow.Args(eval_checkpoint=isaac_file)),
                 lambda: meow.resume_args(meow.Args(resume=isaac_file))):
        with pytest.raises(meow.ConfigError, match=re.escape(message)):
            call()
    del ckpt["obs_rms"]
    torch.save(ckpt, isaac_file)
    assert meow.load_policy(isaac_file)[1].env_id == "MeowCounting-v0"
    with pytest.raises(SystemExit) as exit:  # main() turns ConfigError into one error line
        meow.main(meow.Args(eval_checkpoint=isaac_file, eval_episodes=0))
    assert exit.value.code == 2 and capsys.readouterr().err == "error: --eval-episodes must be >= 1\n"


def test_a_run_killed_while_writing_its_model_leaves_no_model_file(tmp_path, monkeypatch):
    """run_seeds.py --resume takes a run whose model file exists for finished: a half-written one must never
    stand in its place."""
    monkeypatch.chdir(tmp_path)
    save = torch.save

    def killed_while_saving_the_model(obj, path, *a, **kw):
        if os.path.basename(str(path)).startswith("meow_continuous_action.pt"):
            with open(path, "wb") as f:
                f.write(b"half a file")
            raise KeyboardInterrupt
        return save(obj, path, *a, **kw)

    monkeypatch.setattr(torch, "save", killed_while_saving_the_model)
    with pytest.raises(KeyboardInterrupt):
        meow.main(tiny_args())
    (run_dir,) = glob.glob("runs/*")
    assert os.path.isfile(os.path.join(run_dir, "checkpoint.pt"))  # the run got as far as its end
    assert not os.path.exists(os.path.join(run_dir, "meow_continuous_action.pt"))


def test_a_file_of_another_version_fails_with_one_line_naming_the_fields(tiny_checkpoint, tmp_path):
    ckpt = torch.load(tiny_checkpoint, weights_only=False)
    ckpt["args"]["flux_capacitor"] = 3
    del ckpt["args"]["gamma"]
    other = str(tmp_path / "other_version.pt")
    torch.save(ckpt, other)
    result = run_script(["--resume", other], tmp_path, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "another version of this script (unknown args: flux_capacitor; missing args: gamma)" in lines[0]
    # evaluating it needs only the env and the network's args: the rest may differ
    ckpt["args"]["env_id"] = "Hopper-v4"
    torch.save(ckpt, other)
    with pytest.raises(RuntimeError):  # gets as far as loading weights of the counting env's sizes into a Hopper policy
        meow.main(meow.Args(eval_checkpoint=other, eval_episodes=1))
    del ckpt["args"]["alpha"]
    torch.save(ckpt, other)
    with pytest.raises(meow.ConfigError, match="lacks the saved args alpha"):
        meow.evaluate_checkpoint(meow.Args(eval_checkpoint=other, eval_episodes=1))
