"""Roll a task with fixed actions or a saved policy and keep every observation, so that two installs
(MuJoCo or gymnasium versions, CPUs) can be compared step by step.

    python benchmarks/env_rollout.py Walker2d-v4 --out random.npz       # 20,000 steps of fixed uniform actions
    python benchmarks/env_rollout.py Walker2d-v4 --model docs/models/Walker2d-v4.pt --out policy.npz   # 3 episodes
    python benchmarks/env_rollout.py --compare random.npz other_random.npz

Actions: uniform in [-1, 1] from numpy's RandomState(--seed), one row per step whatever the episodes
do (so both installs take the same actions however their episodes end), or the deterministic policy of
a model file (closed loop: its actions follow the observations). The env is the training script's
(make_env: actions rescaled onto the box), reset with --seed and then between episodes from its own RNG.
--compare prints both installs, each rollout's return, and the index of the first observation (counted
from the first reset's, every reset's included) at which they part by more than each of 1e-12, 1e-9, 1e-6,
1e-3 and 0.1 (largest absolute difference).
"""
import argparse
import json
import os
import platform
import sys
import zipfile

import gymnasium as gym
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import meow_continuous_action as meow  # noqa: E402
from plot import this_cpu  # noqa: E402

THRESHOLDS = (1e-12, 1e-9, 1e-6, 1e-3, 0.1)


class InputError(ValueError):
    """Bad input: one `error:` line, exit code 2."""


def installs():
    import mujoco
    import torch

    return {"cpu": this_cpu(), "mujoco": mujoco.__version__, "gymnasium": gym.__version__, "numpy": np.__version__,
            "torch": torch.__version__, "python": platform.python_version()}


def load_policy(path):
    import torch

    try:
        policy, saved, _ = meow.load_policy(path)
    except meow.ConfigError as e:
        raise InputError(str(e))

    def act(obs):
        with torch.no_grad():
            action, _ = policy.sample(torch.as_tensor(obs, dtype=torch.float32)[None], deterministic=True)
        return action[0].numpy()

    return act, saved.env_id


def rollout(env_id, seed=1, steps=20_000, model=None, episodes=3):
    """Observations (every one, resets included), actions, rewards and episode ends of one rollout."""
    policy = None
    if model:
        policy, model_env = load_policy(model)
        if model_env != env_id:
            raise InputError("%s was trained on %s, not %s" % (model, model_env, env_id))
    if env_id not in gym.registry:
        raise InputError("unknown env id %r" % env_id)
    env = meow.make_env(env_id, seed)()
    uniform = np.random.RandomState(seed)
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, ends = [obs], [], [], []
    while (len(actions) < steps) if policy is None else (sum(ends) < episodes):
        action = policy(obs) if policy else uniform.uniform(-1, 1, env.action_space.shape)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        ends.append(terminated or truncated)
        if ends[-1]:
            obs, _ = env.reset()
            observations.append(obs)
    env.close()
    return {"observations": np.array(observations), "actions": np.array(actions), "rewards": np.array(rewards), "ends": np.array(ends),
            "meta": json.dumps(dict(env_id=env_id, seed=seed, source=model or "uniform", installs=installs()))}


FIELDS = ("observations", "actions", "rewards", "ends", "meta")
META = ("env_id", "seed", "source", "installs")


def load(path):
    try:
        with open(path, "rb") as f:  # np.load would read anything else as a pickle, or as an .npy array
            if not zipfile.is_zipfile(f):
                raise ValueError("not an .npz archive")
        with np.load(path) as archive:
            data = {k: archive[k] for k in archive.files}
        missing = [k for k in FIELDS if k not in data]
        if not missing:
            data["meta"] = json.loads(str(data["meta"]))
            missing = [k for k in META if k not in data["meta"]]
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise InputError("cannot read rollout %s: %s" % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if missing:
        raise InputError("%s is not a rollout of this tool (no %s)" % (path, ", ".join(missing)))
    return data


def compare(a, b):
    """The lines --compare prints: installs, returns, and the first observation past each threshold (or none)."""
    ma, mb = a["meta"], b["meta"]
    for key in ("env_id", "seed", "source"):
        if ma[key] != mb[key]:
            raise InputError("the rollouts differ in %s (%s against %s): nothing to compare" % (key, ma[key], mb[key]))
    lines = ["%s, seed %d, actions from %s" % (ma["env_id"], ma["seed"], ma["source"]), "installs (first | second):"]
    lines += ["  %-10s %s | %s" % (k, ma["installs"].get(k), mb["installs"].get(k)) for k in ma["installs"]]
    for name, d in (("first", a), ("second", b)):
        lines.append("%s: %d steps, %d episodes ended, return %.3f" % (name, len(d["rewards"]), d["ends"].sum(), d["rewards"].sum()))
    n = min(len(a["observations"]), len(b["observations"]))
    gap = np.abs(a["observations"][:n] - b["observations"][:n]).max(axis=1)
    lines.append("observations compared: %d; largest difference %.3g" % (n, gap.max()))
    for threshold in THRESHOLDS:
        above = np.flatnonzero(gap > threshold)
        lines.append("  first observation apart by more than %g: %s" % (threshold, above[0] if len(above) else "none"))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env_id", nargs="?", help="the task to roll (e.g. Walker2d-v4)")
    parser.add_argument("--seed", type=int, default=1, help="reset seed and seed of the uniform actions (default: 1)")
    parser.add_argument("--steps", type=int, default=20_000, help="steps of uniform actions (default: 20000)")
    parser.add_argument("--model", help="a model file: act with its deterministic policy instead")
    parser.add_argument("--episodes", type=int, default=3, help="with --model, episodes to roll (default: 3)")
    parser.add_argument("--out", help="write the rollout here (.npz)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two rollout files")
    args = parser.parse_args(argv)
    try:
        if args.compare:
            print("\n".join(compare(*[load(path) for path in args.compare])))
            return
        if not args.env_id or not args.out:
            raise InputError("give ENV_ID --out FILE (roll) or --compare A B")
        if args.steps < 1 or args.episodes < 1:
            raise InputError("--steps and --episodes must be >= 1")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            raise InputError("the folder of --out %s does not exist" % args.out)
        data = rollout(args.env_id, args.seed, args.steps, args.model, args.episodes)
    except InputError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(2)
    with open(args.out, "wb") as f:  # a file object: np.savez would add .npz to another name
        np.savez(f, **data)
    print("%s: %d steps, return %.3f, written to %s" % (args.env_id, len(data["rewards"]), data["rewards"].sum(), args.out))


if __name__ == "__main__":
    main()
