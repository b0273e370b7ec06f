"""benchmarks/env_rollout.py: rollouts that two installs can compare step by step."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import env_rollout  # noqa: E402
import meow_continuous_action as meow  # noqa: E402

TOOL = os.path.join(ROOT, "benchmarks", "env_rollout.py")
HOPPER_MODEL = os.path.join(ROOT, "docs", "models", "Hopper-v4.pt")


def first_apart(lines, threshold):
    return [line for line in lines if "more than %g:" % threshold in line][0].split(": ")[-1]


@pytest.fixture(scope="module")
def uniform():
    return env_rollout.rollout("Hopper-v4", seed=3, steps=300)


def test_uniform_actions_are_one_fixed_row_per_step(uniform):
    """The actions do not depend on where episodes end: both installs take the same ones."""
    expected = np.random.RandomState(3).uniform(-1, 1, (300, 3))
    np.testing.assert_array_equal(uniform["actions"], expected)
    assert len(uniform["observations"]) == 300 + 1 + uniform["ends"].sum()  # the first reset and one per ended episode


def test_same_install_is_identical_and_a_perturbation_is_located(uniform):
    again = env_rollout.rollout("Hopper-v4", seed=3, steps=300)
    for key in ("observations", "actions", "rewards", "ends"):
        np.testing.assert_array_equal(again[key], uniform[key])
    a, b = [dict(d, meta=env_rollout.json.loads(d["meta"])) for d in (uniform, again)]
    lines = env_rollout.compare(a, b)
    assert "largest difference 0" in "\n".join(lines)
    assert all(first_apart(lines, t) == "none" for t in env_rollout.THRESHOLDS)
    b["observations"] = b["observations"].copy()
    b["observations"][50, 2] += 1e-7
    b["observations"][120, 0] -= 0.5
    lines = env_rollout.compare(a, b)
    assert [first_apart(lines, t) for t in env_rollout.THRESHOLDS] == ["50", "50", "120", "120", "120"]


def test_model_rollout_is_the_deterministic_policy_in_closed_loop():
    data = env_rollout.rollout("Hopper-v4", seed=2, model=HOPPER_MODEL, episodes=1)
    assert data["ends"].sum() == 1 and data["ends"][-1]
    ckpt = meow.load_checkpoint(HOPPER_MODEL)
    saved = ckpt["args"]
    policy = meow.FlowPolicy(ckpt["obs_dim"], ckpt["act_dim"], saved["alpha"], saved["sigma_max"], saved["sigma_min"])
    policy.load_state_dict(ckpt["model"])
    with torch.no_grad():  # one row at a time, as acting computes it (a batch rounds otherwise)
        expected = [policy.sample(torch.as_tensor(obs, dtype=torch.float32)[None], deterministic=True)[0][0].numpy() for obs in data["observations"][:-2]]
    # each action from the observation before it (the last observation is the next episode's reset)
    np.testing.assert_array_equal(data["actions"], np.array(expected))
    env = meow.make_env("Hopper-v4", 2)()
    obs, _ = env.reset(seed=2)
    for t, action in enumerate(data["actions"]):  # the same actions open loop: the same observations
        obs, reward, *_ = env.step(action)
        np.testing.assert_array_equal(obs, data["observations"][t + 1])
        assert reward == data["rewards"][t]


def test_rollouts_of_different_settings_are_not_compared(uniform):
    other = env_rollout.rollout("Hopper-v4", seed=4, steps=10)
    a, b = [dict(d, meta=env_rollout.json.loads(d["meta"])) for d in (uniform, other)]
    with pytest.raises(env_rollout.InputError, match="differ in seed"):
        env_rollout.compare(a, b)
    with pytest.raises(env_rollout.InputError, match="trained on Hopper-v4, not Walker2d-v4"):
        env_rollout.rollout("Walker2d-v4", model=HOPPER_MODEL)


def test_command_line_writes_the_named_file_and_compares(tmp_path):
    out = tmp_path / "hopper_rollout"  # no .npz: the file keeps the name given
    for name in ("a", "b"):
        result = subprocess.run([sys.executable, TOOL, "Hopper-v4", "--steps", "50", "--out", str(out) + name], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["hopper_rollouta", "hopper_rolloutb"]
    result = subprocess.run([sys.executable, TOOL, "--compare", str(out) + "a", str(out) + "b"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "largest difference 0" in result.stdout and "mujoco" in result.stdout


@pytest.mark.parametrize("argv, message", [
    (["NoSuchEnv-v9", "--out", "{tmp}/x.npz"], "unknown env id"),
    (["Hopper-v4", "--out", "{tmp}/missing/x.npz"], "folder of --out"),
    (["Hopper-v4", "--steps", "0", "--out", "{tmp}/x.npz"], "must be >= 1"),
    (["Hopper-v4"], "give ENV_ID --out FILE"),
    (["Hopper-v4", "--model", "{tmp}/none.pt", "--out", "{tmp}/x.npz"], "no checkpoint at"),
    (["--compare", "{tmp}/none.npz", "{tmp}/none.npz"], "cannot read rollout"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, argv, message):
    result = subprocess.run([sys.executable, TOOL, *[a.format(tmp=tmp_path) for a in argv]], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_a_file_that_is_not_a_rollout_is_one_error(uniform, tmp_path):
    """Truncated, empty, an .npy array, an image, or an archive without a rollout's arrays or metadata:
    InputError (one error line), never a traceback."""
    good = tmp_path / "good.npz"
    with open(good, "wb") as f:
        np.savez(f, **uniform)
    assert env_rollout.load(str(good))["meta"]["env_id"] == "Hopper-v4"
    whole = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    with open(tmp_path / "array.npz", "wb") as f:
        np.save(f, np.zeros(3))
    with open(tmp_path / "other.npz", "wb") as f:
        np.savez(f, x=np.zeros(2))
    with open(tmp_path / "no_meta.npz", "wb") as f:
        np.savez(f, **dict(uniform, meta='{"env_id": "Hopper-v4"}'))
    with open(os.path.join(ROOT, "docs", "multigoal.png"), "rb") as f:
        (tmp_path / "image.npz").write_bytes(f.read())  # np.load would take it for a pickle
    for name, message in (("truncated", "not an .npz archive"), ("empty", "not an .npz archive"), ("array", "not an .npz archive"),
                          ("image", "not an .npz archive"),
                          ("other", "is not a rollout of this tool (no observations, actions, rewards, ends, meta)"),
                          ("no_meta", "is not a rollout of this tool (no seed, source, installs)")):
        with pytest.raises(env_rollout.InputError, match=re.escape(message)):
            env_rollout.load(str(tmp_path / (name + ".npz")))
