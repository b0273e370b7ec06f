"""The training loop: replay buffer, episode boundaries, end-to-end runs, checkpoints, bad input."""
import glob
import os
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


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    meow.main(tiny_args())
    (run_dir,) = glob.glob("runs/*")
    uninterrupted = torch.load(os.path.join(run_dir, "meow_continuous_action.pt"), weights_only=False)["model"]
    evals_before = scalars(run_dir, "eval/return")
    # the checkpoint left on disk is the one a run killed after it would resume from
    meow.main(meow.Args(resume=os.path.join(run_dir, "checkpoint.pt")))
    resumed = torch.load(os.path.join(run_dir, "meow_continuous_action.pt"), weights_only=False)["model"]
    for key in uninterrupted:
        assert torch.allclose(uninterrupted[key], resumed[key], atol=1e-6), key
    evals_after = scalars(run_dir, "eval/return")
    steps = [s for s, _ in evals_after]
    assert steps == sorted(set(steps)) == [40, 80, 120, 160]  # no gap, no duplicate
    assert np.allclose([v for _, v in evals_after], [v for _, v in evals_before], atol=1e-4)


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
    assert "eval return" in result.stdout and "over 3 episodes" in result.stdout
    assert sorted(os.listdir(cwd / "runs")) == before  # no new run directory


def test_paper_defaults_resolve_per_environment_and_flags_win():
    args = meow.Args(env_id="Ant-v5", tau=0.01)
    assert meow.resolve_defaults(args) is None
    assert (args.alpha, args.tau, args.learning_starts, args.total_timesteps) == (0.05, 0.01, 5000, 4_000_000)
    other = meow.Args(env_id="Pusher-v5")
    assert "Hopper" in meow.resolve_defaults(other)
    assert (other.alpha, other.sigma_max) == (0.25, -0.3)


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
