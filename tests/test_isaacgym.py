"""Tests of meow_isaacgym.py: both backends, the env adapters, the normaliser, checkpoints, errors.

Isaac Gym itself needs a GPU and Python 3.8, so its code path runs against a fake `isaacgym` +
`isaacgymenvs` pair put into sys.modules, whose make() returns a small batched torch env with the
VecTask interface.
"""
import ast
import os
import re
import signal
import subprocess
import sys
import types

import gymnasium as gym
import numpy as np
import pytest
import torch

import meow_isaacgym as mig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "meow_isaacgym.py")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Several torch processes share the 2 cores of CI: two intra-op threads each then wait on one another."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeVecTask:
    """A point pushed around a disc, batched in torch, with IsaacGymEnvs' VecTask conventions.

    reset_buf starts at 1 and flagged envs are reset inside the next step; an ended episode's last
    observation is returned at the step that ends it; extras["time_outs"] marks time-outs. Leaving the
    disc terminates. Observations carry (episode id, step index) so tests can spot stored transitions
    that cross two episodes.
    """

    def __init__(self, num_envs, device, max_episode_length=20, seed=0):
        self.num_envs, self.device, self.max_episode_length = num_envs, torch.device(device), max_episode_length
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.generator = torch.Generator().manual_seed(seed)
        self.pos = torch.zeros(num_envs, 2)
        self.episode = torch.zeros(num_envs)
        self.progress_buf = torch.zeros(num_envs, dtype=torch.long)
        self.reset_buf = torch.ones(num_envs, dtype=torch.long)
        self.obs_buf = torch.zeros(num_envs, 5)
        self.rew_buf = torch.zeros(num_envs)
        self.obs_dict, self.extras = {}, {}

    def reset(self):
        # like VecTask.reset: hand out the current buffer, reset nothing
        self.obs_dict["obs"] = self.obs_buf.clone()
        return self.obs_dict

    def step(self, actions):
        ids = self.reset_buf.nonzero(as_tuple=False).flatten()
        if len(ids) > 0:
            self.pos[ids] = 0.2 * torch.rand(len(ids), 2, generator=self.generator) - 0.1
            self.progress_buf[ids] = 0
            self.episode[ids] += 1
        self.pos += 0.25 * actions.clamp(-1, 1).cpu()
        self.progress_buf += 1
        dist = self.pos.norm(dim=1)
        self.rew_buf = 1.0 - dist
        terminated = dist > 1.0
        self.reset_buf = (terminated | (self.progress_buf >= self.max_episode_length - 1)).long()
        timeout_buf = (self.progress_buf >= self.max_episode_length - 1) & (self.reset_buf != 0)
        self.obs_buf = torch.cat([self.pos, dist[:, None], self.episode[:, None], self.progress_buf[:, None].float()], 1)
        self.extras["time_outs"] = timeout_buf.to(self.device)
        self.obs_dict["obs"] = self.obs_buf.to(self.device)
        return self.obs_dict, self.rew_buf.to(self.device), self.reset_buf.to(self.device), self.extras


@pytest.fixture
def fake_isaacgym(monkeypatch):
    made = []

    def make(seed, task, num_envs, sim_device, rl_device, graphics_device_id=-1, headless=False,
             multi_gpu=False, virtual_screen_capture=False, force_render=True):
        env = FakeVecTask(num_envs, rl_device, seed=seed)
        made.append(dict(task=task, num_envs=num_envs, sim_device=sim_device, headless=headless))
        return env

    isaacgymenvs = types.ModuleType("isaacgymenvs")
    isaacgymenvs.make = make
    monkeypatch.setitem(sys.modules, "isaacgym", types.ModuleType("isaacgym"))
    monkeypatch.setitem(sys.modules, "isaacgymenvs", isaacgymenvs)
    return made


class Counter(gym.Env):
    """obs = (episode id, step index); odd episodes terminate at step 5, the rest time out (TimeLimit 7)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.episode, self.t = -1, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return np.array([self.episode, self.t], dtype=np.float64), {}

    def step(self, action):
        assert -2.0 <= float(action[0]) <= 2.0
        self.t += 1
        terminated = self.episode % 2 == 1 and self.t == 5
        return np.array([self.episode, self.t], dtype=np.float64), 1.0, terminated, False, {}


gym.register("MeowTestCounter-v0", entry_point=Counter, max_episode_steps=7)


def isaac_args(**kw):
    base = dict(env_backend="isaacgym", task="Ant", num_envs=16, sim_device="cpu", rl_device="cpu", headless=True,
                total_timesteps=16 * 240, batch_size=64, learning_starts=20, eval_frequency=1600, eval_episodes=4,
                log_frequency=640)
    base.update(kw)
    return mig.Args(**base)


def scalar_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir)
    acc.Reload()
    return acc


def only_run_dir(tmp_path):
    runs = os.listdir(tmp_path / "runs")
    assert len(runs) == 1
    return str(tmp_path / "runs" / runs[0])


def stored(rb):
    """The stored rows as numpy (obs, actions, rewards, next_obs, terminated, valid)."""
    rows = rb.data[: rb.size].numpy()
    obs, actions, rewards, next_obs, terminated = np.split(rows, np.cumsum(rb.widths)[:-1], axis=1)
    return obs, actions, rewards[:, 0], next_obs, terminated[:, 0], rb.valid[: rb.size].numpy()


# ----------------------------------------------------------------------------------- python 3.8
def test_isaac_files_stay_python38():
    """Isaac Gym Preview 4 runs on Python 3.8 with torch 1.13: the Isaac script and the layers it imports must stay valid there."""
    for name in ("meow_isaacgym.py", "flow_layers.py"):
        src = open(os.path.join(ROOT, name)).read()
        tree = ast.parse(src, filename=name, feature_version=(3, 8))
        for node in ast.walk(tree):
            annotations = []
            if isinstance(node, ast.AnnAssign):
                annotations.append(node.annotation)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                annotations += [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation] + [node.returns]
            for ann in filter(None, annotations):
                for sub in ast.walk(ann):
                    assert not (isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.BitOr)), "%s:%d: X | Y annotation" % (name, sub.lineno)
                    assert not (isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and sub.value.id in ("list", "dict", "tuple", "set", "type")), "%s:%d: builtin generic" % (name, sub.lineno)
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("removeprefix", "removesuffix"), "%s:%d: str.%s is 3.9+" % (name, node.lineno, node.attr)
        # torch APIs newer than 1.13: none, but torch.compile behind a check that this torch has it
        for api in ("torch.func", "torch.export", "set_default_device", "torch.nn.attention"):
            assert api not in src, "%s uses %s (torch > 1.13)" % (name, api)
        if "torch.compile(" in src:
            assert 'hasattr(torch, "compile")' in src, "%s calls torch.compile without checking that torch has it" % name


def test_isaac_script_stands_alone_and_imports_gymnasium_only_for_its_backend():
    """The isaacgym path needs neither meow_continuous_action.py nor gymnasium (an Isaac Gym machine has the old gym)."""
    tree = ast.parse(open(SCRIPT).read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "meow_continuous_action" not in imported
    assert imported & {os.path.splitext(f)[0] for f in os.listdir(ROOT) if f.endswith(".py")} == {"flow_layers"}
    code = ("import sys; sys.modules['gymnasium'] = None; sys.modules['meow_continuous_action'] = None; import meow_isaacgym, tyro; "
            "args = tyro.cli(meow_isaacgym.Args, args=['--task', 'Ant', '--headless']); meow_isaacgym.resolve_defaults(args); "
            "meow_isaacgym.validate_args(args); print('gymnasium' in sys.modules and sys.modules['gymnasium'] is not None)")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


# ----------------------------------------------------------------------------------- adapters
def check_stored_transitions(rb, episode_col, step_col, terminal):
    """Real rows stay inside one episode and advance its step index by one; masked rows are exactly those
    that leave an ended episode; `terminal(episode, step)` (if given) says which real rows are terminal."""
    rows = stored(rb)
    obs, next_obs, terminated, valid = rows[0], rows[3], rows[4], rows[5]
    real = valid == 1
    assert np.all(next_obs[real, episode_col] == obs[real, episode_col])
    assert np.all(next_obs[real, step_col] == obs[real, step_col] + 1)
    assert np.all(next_obs[~real, episode_col] != obs[~real, episode_col])
    if terminal is not None:
        expected = [terminal(e, t) for e, t in zip(next_obs[real, episode_col], next_obs[real, step_col])]
        assert np.array_equal(terminated[real], np.array(expected, dtype=np.float32))
    return rows


@pytest.mark.parametrize("bootstrap_timeouts", [True, False])
def test_gymnasium_adapter_splits_timeouts_and_stores_no_cross_episode_transition(bootstrap_timeouts):
    args = mig.Args(env_backend="gymnasium", env_id="MeowTestCounter-v0")
    envs = mig.make_env(args, 3, seed=0, device=torch.device("cpu"))
    rb = mig.ReplayBuffer(100, 3, 2, 1, torch.device("cpu"))
    obs, dones = envs.reset()
    assert not dones.any()  # gymnasium's reset observations are real first states
    ends = []
    for _ in range(40):
        obs, dones, _, cut = mig.step_and_store(envs, rb, obs, dones, torch.rand(3, 1) * 2 - 1, bootstrap_timeouts)
        # cut: the episodes a time-out ended (step 7) whose last transition bootstraps
        assert np.array_equal(cut.numpy(), dones.numpy() & (obs.numpy()[:, 1] == 7) & bootstrap_timeouts)
        # an ended episode hands back its own last observation (Isaac semantics), not the next one's first
        assert np.all(obs.numpy()[dones.numpy(), 1] >= 5)
        ends.append(obs.numpy()[dones.numpy(), 1])
    envs.close()
    ends = np.concatenate(ends)
    assert np.any(ends == 5) and np.any(ends == 7)  # both terminations and time-outs happened

    def terminal(episode, step):  # a time-out is terminal only when time-outs are treated as terminal
        return (episode % 2 == 1 and step == 5) or (not bootstrap_timeouts and step == 7)

    obs, real = check_stored_transitions(rb, 0, 1, terminal)[0], rb.valid[: rb.size].numpy() == 1
    # exactly one step per restart is masked out: the one after each episode end but the last step's
    assert int((~real).sum()) == len(ends) - int(dones.sum())
    # every episode's first step is acted on from its own first observation, and stored
    env = np.arange(rb.size) % 3
    episodes = set(zip(env[real], obs[real, 0]))
    assert set(zip(env[real & (obs[:, 1] == 0)], obs[real & (obs[:, 1] == 0), 0])) == episodes and len(episodes) > 3 * 4


def test_gymnasium_episode_statistics_count_no_restart_step():
    # each of 3 Counter envs: episode 0 times out after 7 steps, episode 1 terminates after 5, and so on,
    # with one restart step after each end (reward 0, no step of any episode): 5 episodes end in 40 steps
    envs = mig.EpisodeStatistics(mig.make_env(mig.Args(env_backend="gymnasium", env_id="MeowTestCounter-v0"), 3, 0, torch.device("cpu")))
    envs.reset()
    for _ in range(40):
        envs.step(torch.zeros(3, 1))
    count, mean_return, mean_length, _ = envs.pop()
    envs.close()
    assert count == 15 and mean_length == pytest.approx((3 * 7 + 2 * 5) / 5) and mean_return == pytest.approx(mean_length)


def test_isaacgym_adapter_masks_restart_steps(fake_isaacgym):
    isaacgymenvs = mig.import_isaacgymenvs()
    envs = mig.IsaacGymEnv(isaacgymenvs.make(0, "Ant", 8, "cpu", "cpu"), torch.device("cpu"))
    rb = mig.ReplayBuffer(200, 8, 5, 2, torch.device("cpu"))
    obs, dones = envs.reset()
    assert dones.all()  # a new VecTask resets every env during its first step
    for _ in range(120):
        obs, dones, _, _ = mig.step_and_store(envs, rb, obs, dones, torch.rand(8, 2) * 2 - 1, bootstrap_timeouts=True)
    valid = rb.valid[: rb.size].numpy()
    assert valid[:8].sum() == 0  # the first step leaves the zero observations of an unstarted VecTask
    # leaving the disc (distance > 1) terminates and does not bootstrap; a time-out (step 19) does, and wins
    # over a termination in the same step, as IsaacGymEnvs' time_outs say
    _, _, _, next_obs, terminated, _ = check_stored_transitions(rb, 3, 4, None)
    real = valid == 1
    dist, step, terminated = next_obs[real, 2], next_obs[real, 4], terminated[real]
    assert np.array_equal(terminated, ((dist > 1.0) & (step < 19)).astype(np.float32))
    assert np.any(terminated == 1) and np.any(step == 19)


# ----------------------------------------------------------------------------------- normaliser
def test_running_mean_std_follows_the_authors_scaler_and_round_trips(tmp_path):
    """Prior mean 0, variance 1, count 1; each batch merged with its unbiased variance; (x - mean) / (std + 1e-8)."""
    rng = np.random.default_rng(0)
    rms = mig.RunningMeanStd(3)
    mean, var, count = np.zeros(3), np.ones(3), 1.0
    for i in range(30):
        x = rng.normal(loc=[1.0, -2.0, 5.0], scale=[0.5, 3.0, 10.0], size=(int(rng.integers(2, 50)), 3)).astype(np.float32)
        rms.update(torch.as_tensor(x))
        n, batch_mean, batch_var = len(x), x.astype(np.float64).mean(0), x.astype(np.float64).var(0, ddof=1)
        delta, total = batch_mean - mean, count + n
        mean, var, count = mean + delta * n / total, (var * count + batch_var * n + delta**2 * count * n / total) / total, total
    np.testing.assert_allclose(rms.mean.numpy(), mean, rtol=1e-9)
    np.testing.assert_allclose(rms.var.numpy(), var, rtol=1e-9)
    assert float(rms.count) == count
    # the prior weighs one observation: after ~800 of them the statistics are the data's
    np.testing.assert_allclose(rms.mean.numpy(), [1.0, -2.0, 5.0], atol=0.8)
    np.testing.assert_allclose(np.sqrt(rms.var.numpy()), [0.5, 3.0, 10.0], rtol=0.1)
    x = torch.tensor([[2.0, 1.0, -90.0]])
    expected = np.clip((x.numpy()[0] - mean) / (np.sqrt(var) + 1e-8), -5, 5)
    np.testing.assert_allclose(rms(x).numpy()[0], expected, rtol=1e-6)
    assert rms(x)[0, 2] == -5.0  # clipped

    path = str(tmp_path / "checkpoint.pt")
    mig.save_checkpoint(path, {"model": {}, "args": {}, "obs_rms": rms.state_dict()})
    restored = mig.RunningMeanStd(3)
    restored.load_state_dict(mig.load_checkpoint(path)["obs_rms"])
    probe = torch.as_tensor(rng.normal(size=(10, 3)).astype(np.float32))
    assert torch.equal(restored(probe), rms(probe))
    assert restored(probe).dtype == torch.float32 and float(restored(probe * 1e6).abs().max()) <= restored.clip


# ----------------------------------------------------------------------------------- end to end
def test_isaacgym_backend_trains_checkpoints_resumes_and_evaluates(fake_isaacgym, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mig.main(isaac_args(task="Point", save_model=True, save_buffer=True, checkpoint_frequency=1600))
    assert fake_isaacgym[0] == dict(task="Point", num_envs=16, sim_device="cpu", headless=True)
    run_dir = only_run_dir(tmp_path)
    out = capsys.readouterr().out
    assert "defaults: no paper row for Point: the Ant row (Isaac Gym table)" in out and "step 3840/3840 (vectorized 240/240)" in out
    acc = scalar_tags(run_dir)
    for tag in ("charts/episodic_return", "charts/episodic_return_last100", "charts/episodic_length", "charts/SPS", "losses/qf_loss", "eval/return"):
        assert tag in acc.Tags()["scalars"], tag
    assert "hyperparameters" in "".join(acc.Tags()["tensors"])
    lengths = [e.value for e in acc.Scalars("charts/episodic_length")]
    assert all(1 <= x <= 20 for x in lengths)

    ckpt = mig.load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    assert ckpt["step"] == 3200 and ckpt["iteration"] == 200 and ckpt["buffer"]["size"] == 3200
    # the normaliser took in the states and next states of each update's batch, and nothing else:
    # updates at vectorized steps 20 to 199, batches of 64, on top of the prior's count of 1
    assert float(ckpt["obs_rms"]["count"]) == 1 + 2 * 64 * 180

    mig.main(mig.Args(resume=os.path.join(run_dir, "checkpoint.pt"), total_timesteps=16 * 260, sim_device="cpu", rl_device="cpu"))
    out = capsys.readouterr().out
    assert "resuming" in out and "step 4160/4160" in out
    assert len(fake_isaacgym) == 2

    returns = mig.main(mig.Args(eval_checkpoint=os.path.join(run_dir, "meow_isaacgym.pt"), sim_device="cpu", rl_device="cpu", eval_episodes=3))
    assert len(returns) == 3 and all(np.isfinite(returns))
    assert fake_isaacgym[-1]["num_envs"] == 3
    assert re.search(r"eval return -?[0-9.]+ \+- [0-9.]+ over 3 episodes of [0-9]+(-[0-9]+)? steps \(deterministic policy\)", capsys.readouterr().out)


def test_evaluate_counts_the_first_episode_of_each_env_to_the_step_that_ends_it():
    class ScriptedEnvs:
        """Env 0 ends at step 2, env 1 at step 4, env 2 at steps 3 and 5; rewards 1, 2 and 3 a step."""
        num_envs, device = 3, torch.device("cpu")

        def reset(self):
            self.t = 0
            return torch.zeros(3, 1), None

        def step(self, actions):
            self.t += 1
            dones = torch.tensor([self.t == 2, self.t == 4, self.t in (3, 5)])
            return torch.zeros(3, 1), torch.tensor([1.0, 2.0, 3.0]), dones, torch.zeros(3, dtype=torch.bool)

    class Policy:
        def sample(self, obs, deterministic):
            assert deterministic
            return torch.zeros(len(obs), 1), None

    assert mig.evaluate(Policy(), lambda obs: obs, ScriptedEnvs(), 3) == ([2.0, 8.0, 9.0], [2, 4, 3])
    assert mig.evaluate(Policy(), lambda obs: obs, ScriptedEnvs(), 1) == ([2.0], [2])


def test_a_resumed_isaac_run_keeps_no_copy_of_its_replay_buffer_beside_the_buffer(fake_isaacgym, tmp_path, monkeypatch, watch_buffer_copies):
    monkeypatch.chdir(tmp_path)
    mig.main(isaac_args(save_model=True, save_buffer=True, checkpoint_frequency=1600))
    checked = watch_buffer_copies(mig)
    mig.main(mig.Args(resume=os.path.join(only_run_dir(tmp_path), "checkpoint.pt"), total_timesteps=16 * 400, sim_device="cpu", rl_device="cpu"))
    assert checked[0] == ("loaded", True) and ("checkpoint", True) in checked[1:]
    assert all(freed for _, freed in checked), checked


def test_a_stop_signal_writes_a_checkpoint_at_the_next_vectorized_step_and_stops(fake_isaacgym, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    original, steps = FakeVecTask.step, []

    def step_then_signal(env, actions):
        steps.append(None)
        if len(steps) == 50:  # the first evaluation comes at vectorized step 100
            os.kill(os.getpid(), signal.SIGTERM)  # as SLURM's pre-emption
        return original(env, actions)

    monkeypatch.setattr(FakeVecTask, "step", step_then_signal)
    with pytest.raises(SystemExit) as stopped:
        mig.main(isaac_args(save_model=True, checkpoint_frequency=1600))
    assert stopped.value.code == 128 + signal.SIGTERM and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    run_dir = only_run_dir(tmp_path)
    ckpt = mig.load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    assert (ckpt["iteration"], ckpt["step"]) == (50, 800) and not os.path.exists(os.path.join(run_dir, "meow_isaacgym.pt"))
    assert "SIGTERM: checkpoint at step 800 written to" in capsys.readouterr().out


def test_gymnasium_backend_trains_hopper_with_4_envs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mig.main(mig.Args(env_backend="gymnasium", env_id="Hopper-v4", num_envs=4, total_timesteps=4 * 250, batch_size=64,
                      learning_starts=50, eval_frequency=500, eval_episodes=2, log_frequency=200, save_model=True))
    run_dir = only_run_dir(tmp_path)
    # named by the env id in full, where run_seeds.py --resume and plot.py --export look for it
    assert os.path.basename(run_dir).startswith("Hopper-v4__meow_isaacgym__1__")
    acc = scalar_tags(run_dir)
    for tag in ("charts/episodic_return", "charts/SPS", "losses/qf_loss", "eval/return"):
        assert tag in acc.Tags()["scalars"], tag
    assert np.isfinite([e.value for e in acc.Scalars("losses/qf_loss")]).all()
    for tag in ("bias/q_value", "bias/soft_return", "bias/normalised"):  # measured episodes, time-outs bootstrapping
        assert np.isfinite([e.value for e in acc.Scalars(tag)]).all(), tag
    out = capsys.readouterr().out
    assert "defaults: no paper row for Hopper: the Ant row (Isaac Gym table)" in out and "timeouts=bootstrap" in out
    lines = [line for line in out.splitlines() if line.startswith("step ")]  # "-" for what is not measured yet
    assert "| eval - |" in lines[0] and " - " not in lines[-1] and "nan" not in out, out
    returns = mig.main(mig.Args(eval_checkpoint=os.path.join(run_dir, "meow_isaacgym.pt"), eval_episodes=2))
    assert len(returns) == 2


# ----------------------------------------------------------------------------------- errors
def test_missing_isaacgym_is_one_line_and_nonzero(tmp_path):
    # the script as run from a shell, on a machine where `import isaacgym` fails
    code = "import runpy, sys; sys.modules['isaacgym'] = None; sys.argv = %r; runpy.run_path(%r, run_name='__main__')" % (
        [SCRIPT, "--task", "Ant"], SCRIPT)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "Isaac Gym Preview 4" in lines[0] and "IsaacGymEnvs" in lines[0] and "--env-backend gymnasium" in lines[0]
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env-backend", "gymnasium", "--env-id", "NoSuchEnv-v0"], "unknown env id"),
        (["--env-backend", "gymnasium", "--num-envs", "0"], "--num-envs"),
        (["--env-backend", "gymnasium", "--sigma-min", "3"], "--sigma-min"),
        (["--env-backend", "gymnasium", "--num-envs", "2000"], "2^24"),
        (["--env-backend", "isaacgym", "--eval-checkpoint", "missing.pt"], "no checkpoint"),
        (["--env-backend", "isaacgym", "--eval-checkpoint", "missing.pt", "--eval-episodes", "0"], "--eval-episodes must be >= 1"),
        (["--task", "Humanoid", "--num-envs", "4"], "--env-backend gymnasium"),
        (["--env-backend", "gymnasium", "--alpha", "nan"], "--alpha must be a finite number (got nan)"),
        (["--env-backend", "gymnasium", "--learning-rate", "inf"], "--learning-rate must be a finite number"),
        (["--env-backend", "gymnasium", "--total-timesteps", "800"], "100 vectorized steps of 8 envs, which does not pass --learning-starts (100"),
    ],
)
def test_bad_input_is_one_line_before_any_run_dir(tmp_path, monkeypatch, capsys, argv, message):
    import tyro

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "isaacgym", None)  # as on a machine without Isaac Gym
    with pytest.raises(SystemExit) as exit_info:
        mig.main(tyro.cli(mig.Args, args=argv))
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "runs")


def test_a_diverging_run_stops_with_one_line_and_no_model(fake_isaacgym, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        mig.main(isaac_args(learning_rate=1e4, max_grad_norm=1e9, log_frequency=160, save_model=True))
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: training diverged at step") and "--learning-rate (10000)" in line
    assert "step 3840/3840" not in captured.out
    assert not os.path.exists(os.path.join(only_run_dir(tmp_path), "meow_isaacgym.pt"))


def test_log_points_carry_the_diagnostics(fake_isaacgym, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mig.main(isaac_args(total_timesteps=16 * 100, eval_frequency=10 ** 6, log_frequency=320))
    acc = scalar_tags(only_run_dir(tmp_path))
    for tag in ("losses/q_values", "losses/v_values", "charts/entropy", "charts/prior_log_std", "charts/action_saturation"):
        values = [e.value for e in acc.Scalars(tag)]
        assert len(values) == 4 and np.isfinite(values).all(), tag  # at 640, 960, 1280, 1600: after learning starts (320)
    for tag in ("bias/q_value", "bias/soft_return", "bias/normalised"):  # episodes begun after 320 end by 640 (at most 20 steps)
        assert [e.step for e in acc.Scalars(tag)] == [640, 960, 1280, 1600], tag
    assert "| entropy " in capsys.readouterr().out


# ----------------------------------------------------------------------------------- the paper's Isaac regime
@pytest.mark.parametrize("task", sorted(mig.PAPER_DEFAULTS))
def test_each_tasks_defaults_make_the_papers_updates_and_evaluate_only_at_the_end(task):
    args = mig.Args(task=task)
    line = mig.resolve_defaults(args)
    assert line.startswith("defaults: the paper's %s row (Isaac Gym table)" % task)
    row = mig.PAPER_DEFAULTS[task]
    vectorized_steps = -(-args.total_timesteps // args.num_envs)
    assert vectorized_steps == row["updates"] == (500_000 if task == "Ingenuity" else 1_000_000)  # one update per vectorized step
    assert (args.num_envs, args.batch_size) == (row["num_envs"], row["batch_size"]) and args.num_envs * args.batch_size == 131072
    assert args.timeouts == "terminal" and args.max_grad_norm == 60.0
    # no evaluation, and so no restart of the training envs, before the last vectorized step
    assert args.eval_frequency // args.num_envs >= vectorized_steps
    mig.validate_args(args)


def test_the_gymnasium_backend_takes_the_isaac_row_of_its_task_and_a_cpu_sized_length():
    args = mig.Args(env_backend="gymnasium", env_id="Ant-v4")
    line = mig.resolve_defaults(args)
    assert line.startswith("defaults: the paper's Ant row (Isaac Gym table)") and "not the paper's" in line
    assert (args.alpha, args.tau, args.batch_size, args.num_envs) == (0.075, 0.0005, 1024, mig.GYMNASIUM_NUM_ENVS)
    assert (args.total_timesteps, args.eval_frequency, args.timeouts) == (1_000_000, 100_000, "bootstrap")
    explicit = mig.Args(env_backend="gymnasium", env_id="Ant-v4", timeouts="terminal", max_grad_norm=30.0)
    mig.resolve_defaults(explicit)
    assert (explicit.timeouts, explicit.max_grad_norm) == ("terminal", 30.0)


def test_the_isaacgym_backend_with_default_evaluation_restarts_the_training_envs_only_at_the_end(fake_isaacgym, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    restarts = []
    reset = mig.IsaacGymEnv.reset
    monkeypatch.setattr(mig.IsaacGymEnv, "reset", lambda self: restarts.append(1) or reset(self))
    mig.main(isaac_args(num_envs=32, total_timesteps=32 * 120, eval_frequency=None, log_frequency=32 * 40))
    assert len(restarts) == 2  # the start, and the one evaluation at the last step
    acc = scalar_tags(only_run_dir(tmp_path))
    assert [e.step for e in acc.Scalars("eval/return")] == [32 * 120]


def test_extending_a_run_that_evaluates_only_at_its_end_moves_the_evaluation_to_the_new_end(fake_isaacgym, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mig.main(isaac_args(num_envs=32, total_timesteps=32 * 120, eval_frequency=None, log_frequency=32 * 40,
                        save_model=True, checkpoint_frequency=32 * 100))
    run_dir = only_run_dir(tmp_path)
    restarts = []
    reset = mig.IsaacGymEnv.reset
    monkeypatch.setattr(mig.IsaacGymEnv, "reset", lambda self: restarts.append(1) or reset(self))
    mig.main(mig.Args(resume=os.path.join(run_dir, "checkpoint.pt"), total_timesteps=32 * 160, sim_device="cpu", rl_device="cpu"))
    assert len(restarts) == 2  # the start, and the one evaluation at the new last step, not at the old one
    acc = scalar_tags(run_dir)
    # TensorBoard drops the first run's points after the checkpoint (step 3200), its evaluation at 3840 among them
    assert [e.step for e in acc.Scalars("eval/return")] == [32 * 160]
    # a frequency that was given, not the one-evaluation default, is kept
    mig.main(isaac_args(num_envs=32, total_timesteps=32 * 120, eval_frequency=32 * 60, log_frequency=32 * 40,
                        save_model=True, checkpoint_frequency=32 * 100, exp_name="given"))
    given = [d for d in (tmp_path / "runs").iterdir() if "given" in d.name][0]
    args, _ = mig.resume_args(mig.Args(resume=str(given / "checkpoint.pt"), total_timesteps=32 * 160))
    assert args.eval_frequency == 32 * 60


class ScriptedEnv:
    """Hands out scripted (rewards, dones): the returns of finished episodes are known in advance."""

    restart_step_counts = True  # every scripted reward belongs to an episode

    def __init__(self, rewards, dones):
        self.rewards, self.dones = rewards, dones
        self.num_envs, self.obs_dim, self.act_dim, self.device = rewards.shape[1], 1, 1, torch.device("cpu")
        self.t = 0

    def step(self, actions):
        r, d = self.rewards[self.t], self.dones[self.t]
        self.t += 1
        return torch.zeros(self.num_envs, 1), r, d, torch.zeros_like(d)


def test_the_papers_curve_is_the_mean_return_of_the_last_100_finished_episodes():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 10, (300, 7), generator=gen).float()
    dones = torch.rand(300, 7, generator=gen) < 0.15
    dones[40] = True  # all envs end together at least once
    stats = mig.EpisodeStatistics(ScriptedEnv(rewards, dones), window=100)
    finished, running = [], torch.zeros(7)
    for t in range(300):
        stats.step(torch.zeros(7, 1))
        running += rewards[t]
        for i in range(7):  # in env order within a step, as the ring fills
            if dones[t, i]:
                finished.append(float(running[i]))
                running[i] = 0
        if t in (3, 120, 299):
            count, mean_return, _, last = stats.pop()
            if not finished:
                assert count == 0 and np.isnan(last)
            else:
                assert abs(last - np.mean(finished[-100:])) < 1e-4, t
    assert len(finished) > 100


def non_finite_observation_at_step_50(monkeypatch, value, reward_at=None):
    """The fake task's 50th vectorized step returns `value` in one env's observation (and, with `reward_at`,
    its reward at that step)."""
    step = FakeVecTask.step

    def patched(self, actions):
        obs_dict, rewards, reset_buf, extras = step(self, actions)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 50:
            obs_dict["obs"][3, 0] = value
        if self.calls == reward_at:
            rewards[5] = float("nan")
        return obs_dict, rewards, reset_buf, extras

    monkeypatch.setattr(FakeVecTask, "step", patched)


def test_a_non_finite_observation_stops_the_isaac_loop_with_one_line(fake_isaacgym, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    non_finite_observation_at_step_50(monkeypatch, float("nan"))
    with pytest.raises(SystemExit) as exit_info:
        mig.main(isaac_args(log_frequency=16 * 60, save_model=True))
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: an observation of the envs is not finite at step %d; no model file was written" % (16 * 50)


@pytest.mark.parametrize("reward_at, first", [(40, "a reward"), (60, "an observation")])
def test_a_non_finite_reward_stops_the_isaac_loop_and_the_first_fault_is_named(fake_isaacgym, tmp_path, monkeypatch, capsys, reward_at, first):
    monkeypatch.chdir(tmp_path)
    non_finite_observation_at_step_50(monkeypatch, 0.0 if first == "a reward" else float("nan"), reward_at=reward_at)
    with pytest.raises(SystemExit) as exit_info:
        mig.main(isaac_args(log_frequency=16 * 70))
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: %s of the envs is not finite at step %d; no model file was written" % (first, 16 * min(reward_at, 50))


def test_no_checkpoint_is_written_after_a_non_finite_observation(fake_isaacgym, tmp_path, monkeypatch, capsys):
    """A checkpoint due between the bad step and the next log point would otherwise hold the observation in its
    buffer (and the error line's "no model file was written" would be false)."""
    monkeypatch.chdir(tmp_path)
    non_finite_observation_at_step_50(monkeypatch, float("inf"))
    with pytest.raises(SystemExit) as exit_info:
        mig.main(isaac_args(log_frequency=16 * 60, save_model=True, save_buffer=True, checkpoint_frequency=16 * 55))
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: an observation of the envs is not finite at step %d; no model file was written" % (16 * 50)
    assert [name for name in os.listdir(only_run_dir(tmp_path)) if ".pt" in name] == []
