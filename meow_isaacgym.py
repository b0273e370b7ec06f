"""MEow (Chao et al., NeurIPS 2024, arXiv 2405.13629) on batched simulators: Isaac Gym on a GPU, or
N copies of a gymnasium task through gymnasium's vector API on any machine.

The network, the single soft-Bellman loss and the update are those of meow_continuous_action.py,
imported from it. What differs is the environment side: N envs step at once and hand back torch
tensors on the training device, so the replay buffer, the observation normaliser, sampling and the
targets all stay on that device, and one gradient step follows each vectorized step (the paper's
Isaac Gym setting).

Run: python meow_isaacgym.py --task Ant --headless                      (Isaac Gym Preview 4, GPU)
     python meow_isaacgym.py --env-backend gymnasium --env-id Ant-v4     (anywhere, CPU)

Kept valid for Python 3.8 and torch >= 1.13, which Isaac Gym Preview 4 machines run.
"""
# Isaac Gym refuses to load once torch has been imported, so it must come first; where it is not
# installed, the isaacgym backend reports how to install it when it is chosen (see make_env).
try:
    import isaacgym  # noqa: F401
except ImportError:
    pass

import os
import time
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro

from meow_continuous_action import (
    Batch,
    ConfigError,
    ReplayBuffer,
    check_env_id,
    check_resumable,
    fail,
    format_eta,
    hparam_table,
    load_checkpoint,
    load_learner,
    make_learner,
    make_policy,
    maybe_compile,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    validate_algorithm_args,
)


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run directory name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, sets `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """gymnasium backend: train on a CUDA GPU when one is available (the isaacgym backend trains on --rl-device)"""
    torch_threads: int = 1
    """CPU threads of torch ops (the nets are small: one thread is fastest and lets runs share the cores)"""
    compile: bool = False
    """if toggled, wrap the loss and action sampling with `torch.compile` (falls back with a warning)"""
    track: bool = False
    """if toggled, log the run to Weights & Biases (needs `pip install wandb`)"""
    wandb_project_name: str = "meow"
    """the Weights & Biases project name"""
    wandb_entity: Optional[str] = None
    """the Weights & Biases entity (team)"""
    save_model: bool = False
    """if toggled, save the model to runs/{run_name}/{exp_name}.pt at the end, and resumable checkpoints on the way"""
    checkpoint_frequency: int = 100_000
    """with --save-model, write runs/{run_name}/checkpoint.pt every this many env steps (all envs)"""
    save_buffer: bool = False
    """include the replay buffer in checkpoints (large)"""
    resume: Optional[str] = None
    """path of a checkpoint.pt to continue from (its args are used, with this machine's device flags; --total-timesteps may extend it). Simulator states are not saved (Isaac Gym cannot snapshot them), so every env starts a new episode: a resumed run is not bit-identical to an uninterrupted one"""
    eval_checkpoint: Optional[str] = None
    """evaluate the deterministic policy of a saved model or checkpoint on its own backend and task for --eval-episodes episodes, then exit"""

    # Environment
    env_backend: Literal["isaacgym", "gymnasium"] = "isaacgym"
    """isaacgym: an IsaacGymEnvs task on the GPU; gymnasium: --num-envs copies of --env-id through gymnasium's vector API"""
    task: str = "Ant"
    """isaacgym backend: the IsaacGymEnvs task (Ant, Humanoid, Ingenuity, Anymal, AllegroHand, FrankaCabinet, ...)"""
    env_id: str = "Ant-v4"
    """gymnasium backend: the id of the gymnasium environment"""
    num_envs: Optional[int] = None
    """number of parallel environments (paper default per task; 8 for the gymnasium backend)"""
    sim_device: str = "cuda:0"
    """isaacgym backend: the device the physics runs on"""
    rl_device: str = "cuda:0"
    """isaacgym backend: the device of the observations, the networks and the replay buffer"""
    graphics_device_id: int = 0
    """isaacgym backend: the GPU that renders (-1: none)"""
    headless: bool = False
    """isaacgym backend: if toggled, run without the viewer window (needed on a machine without a display)"""
    async_envs: bool = False
    """gymnasium backend: if toggled, step the envs in subprocesses (gymnasium's AsyncVectorEnv) instead of in this process"""
    bootstrap_timeouts: bool = True
    """bootstrap from the last state at a time-out (true terminations never bootstrap); --no-bootstrap-timeouts treats time-outs as terminal, as the paper's runs did"""

    # Algorithm arguments; `None` means "the paper's value for this task"
    total_timesteps: Optional[int] = None
    """total environment steps over all envs (paper default per task)"""
    alpha: Optional[float] = None
    """entropy temperature alpha (paper default per task)"""
    tau: Optional[float] = None
    """Polyak rate of the target network (paper default per task)"""
    sigma_max: Optional[float] = None
    """upper bound of the prior's log-std (paper default per task)"""
    sigma_min: Optional[float] = None
    """lower bound of the prior's log-std (paper default per task)"""
    batch_size: Optional[int] = None
    """minibatch size of each gradient step (paper default per task)"""
    buffer_steps_per_env: int = 15_000
    """replay memory in vectorized steps: it holds this many transitions per env"""
    learning_starts: int = 100
    """random actions and no updates for this many vectorized steps"""
    gamma: float = 0.99
    """discount factor"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    max_grad_norm: float = 30.0
    """gradient-norm clipping threshold"""

    # Evaluation and logging
    eval_frequency: int = 100_000
    """evaluate the deterministic policy every this many env steps (all envs); the isaacgym backend restarts its training envs for it (one simulation per process)"""
    eval_episodes: int = 10
    """episodes per evaluation: the first episode of each of this many envs, restarted together"""
    log_frequency: int = 10_000
    """read losses and episode statistics from the device and log them every this many env steps (all envs)"""


# The paper's Isaac Gym hyper-parameters. Steps count env steps over all envs; each batch size is the
# authors' 131072 / num_envs.
PAPER_DEFAULTS = {
    "Ant": dict(num_envs=128, batch_size=1024, alpha=0.075, tau=0.0005, sigma_max=2.0, sigma_min=-5.0, total_timesteps=1_000_000),
    "Humanoid": dict(num_envs=128, batch_size=1024, alpha=0.25, tau=0.00025, sigma_max=-0.3, sigma_min=-5.0, total_timesteps=1_000_000),
    "Ingenuity": dict(num_envs=128, batch_size=1024, alpha=0.025, tau=0.0025, sigma_max=-0.3, sigma_min=-4.0, total_timesteps=500_000),
    "Anymal": dict(num_envs=128, batch_size=1024, alpha=0.00075, tau=0.025, sigma_max=-1.0, sigma_min=-5.0, total_timesteps=1_000_000),
    "AllegroHand": dict(num_envs=512, batch_size=256, alpha=0.1, tau=0.001, sigma_max=-0.3, sigma_min=-4.0, total_timesteps=1_000_000),
    "FrankaCabinet": dict(num_envs=512, batch_size=256, alpha=0.075, tau=0.01, sigma_max=-0.3, sigma_min=-5.0, total_timesteps=1_000_000),
}
# On a CPU the copies step one after another and each adds 15000 steps of replay memory: 8 keeps
# Humanoid-v4's near 0.4 GB. --num-envs 128 restores the paper's ratio of updates to env steps.
GYMNASIUM_NUM_ENVS = 8

ISAACGYM_MISSING = (
    "the isaacgym backend needs Isaac Gym Preview 4 and IsaacGymEnvs (%s): install Isaac Gym from NVIDIA's tarball "
    "(pip install -e isaacgym/python) and IsaacGymEnvs (git clone https://github.com/isaac-sim/IsaacGymEnvs; "
    "pip install -e IsaacGymEnvs) on Python 3.8, see the README; or train without them with --env-backend gymnasium"
)


def task_name(args):
    return args.task if args.env_backend == "isaacgym" else args.env_id.split("-v")[0]


def resolve_defaults(args):
    """Fill every hyper-parameter left as None with the paper's value for the task; a note when there is none."""
    name, note = task_name(args), None
    if name not in PAPER_DEFAULTS:
        note = "note: no paper defaults for %s; using the Ant values for unset hyper-parameters" % name
        name = "Ant"
    defaults = dict(PAPER_DEFAULTS[name])
    if args.env_backend == "gymnasium":
        defaults["num_envs"] = GYMNASIUM_NUM_ENVS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return note


def validate_args(args):
    """Raise ConfigError for settings that cannot train."""
    validate_algorithm_args(args)
    if min(args.num_envs, args.batch_size, args.buffer_steps_per_env, args.total_timesteps) < 1:
        raise ConfigError("--num-envs, --batch-size, --buffer-steps-per-env and --total-timesteps must be >= 1")
    if args.learning_starts < 1:
        raise ConfigError("--learning-starts must be >= 1 (got %d)" % args.learning_starts)
    if args.learning_starts >= args.buffer_steps_per_env:
        raise ConfigError("--learning-starts (%d) must be < --buffer-steps-per-env (%d)" % (args.learning_starts, args.buffer_steps_per_env))
    if args.buffer_steps_per_env * args.num_envs > 2**24:
        raise ConfigError("a replay memory of %d steps x %d envs exceeds 2^24 rows, the most torch.multinomial samples from on a GPU; lower --buffer-steps-per-env" % (args.buffer_steps_per_env, args.num_envs))
    if min(args.eval_frequency, args.eval_episodes, args.log_frequency, args.checkpoint_frequency) < 1:
        raise ConfigError("--eval-frequency, --eval-episodes, --log-frequency and --checkpoint-frequency must be >= 1")


def check_backend(args):
    """The backend's own input: devices and packages for isaacgym, the env id for gymnasium."""
    if args.env_backend == "gymnasium":
        check_env_id(args.env_id)
        return
    import_isaacgymenvs()
    for flag, device in (("--sim-device", args.sim_device), ("--rl-device", args.rl_device)):
        try:
            device = torch.device(device)
        except RuntimeError:
            raise ConfigError("%s %r is not a device (e.g. cuda:0 or cpu)" % (flag, device))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("%s %s but torch sees no CUDA GPU; use --sim-device cpu --rl-device cpu, or --env-backend gymnasium" % (flag, device))


def check_extras(args):
    if args.track:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("--track needs wandb: pip install wandb")


def import_isaacgymenvs():
    try:
        import isaacgym  # noqa: F401  (imported before torch at the top when installed)
        import isaacgymenvs
    except ImportError as e:
        raise ConfigError(ISAACGYM_MISSING % str(e).splitlines()[0])
    return isaacgymenvs


class IsaacGymEnv:
    """An IsaacGymEnvs VecTask seen through the interface the training loop uses.

    step(actions) -> (obs, rewards, dones, time_outs), tensors on the device. An env whose `dones` is
    set returns that episode's last observation and restarts during the next step, so the transition
    of that next step is not a real one.
    """

    def __init__(self, task, device):
        self.task = task
        self.device = device
        self.num_envs = task.num_envs
        self.obs_dim = task.observation_space.shape[0]
        self.act_dim = task.action_space.shape[0]

    def reset(self):
        """Have every env start a new episode; returns (obs, dones) with every env marked as restarting."""
        # a VecTask resets the envs flagged in reset_buf during its next step; a new VecTask starts with all flagged
        self.task.reset_buf[:] = 1
        obs = self.task.reset()["obs"]
        return obs, torch.ones(self.num_envs, dtype=torch.bool, device=self.device)

    def step(self, actions):
        obs_dict, rewards, reset_buf, extras = self.task.step(actions)
        return obs_dict["obs"], rewards, reset_buf.bool(), extras["time_outs"].bool()

    def close(self):
        pass  # an Isaac Gym simulation lives as long as its process


class GymnasiumEnv:
    """gymnasium's vector API behind the Isaac-style interface of IsaacGymEnv.

    The vector env autoresets in the same step: for an env whose episode ended, gymnasium returns the
    next episode's first observation and keeps the last one in infos["final_obs"]. Returning the last
    one instead gives the Isaac semantics, so the training loop is the same for both backends: the
    next step, whose action was chosen from that last observation, is not stored (one step per
    episode), and no transition across two episodes is ever stored.
    """

    def __init__(self, envs, device, seed):
        self.envs = envs
        self.device = device
        self.seed = seed
        self.num_envs = envs.num_envs
        self.obs_dim = envs.single_observation_space.shape[0]
        self.act_dim = envs.single_action_space.shape[0]

    def tensor(self, x, dtype=torch.float32):
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

    def reset(self):
        obs, _ = self.envs.reset(seed=self.seed)
        self.seed = None  # seed once; later resets continue each env's random stream
        return self.tensor(obs), torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.envs.step(actions.cpu().numpy())
        if "_final_obs" in infos:
            for i in np.flatnonzero(infos["_final_obs"]):
                obs[i] = infos["final_obs"][i]
        # a time limit hit in a terminal state is a termination
        time_outs = truncated & ~terminated
        return self.tensor(obs), self.tensor(rewards), self.tensor(terminated | truncated, torch.bool), self.tensor(time_outs, torch.bool)

    def close(self):
        self.envs.close()


class EpisodeStatistics:
    """Episode returns and lengths summed on the device; read (one host copy) only when logging."""

    def __init__(self, env):
        self.env = env
        self.num_envs, self.obs_dim, self.act_dim, self.device = env.num_envs, env.obs_dim, env.act_dim, env.device
        self.returns = torch.zeros(self.num_envs, device=self.device)
        self.lengths = torch.zeros(self.num_envs, device=self.device)
        self.finished = torch.zeros(3, device=self.device)  # episodes, sum of returns, sum of lengths

    def reset(self):
        self.returns.zero_()
        self.lengths.zero_()
        return self.env.reset()

    def step(self, actions):
        obs, rewards, dones, time_outs = self.env.step(actions)
        self.returns += rewards
        self.lengths += 1
        ended = dones.float()
        self.finished += torch.stack([ended.sum(), (self.returns * ended).sum(), (self.lengths * ended).sum()])
        self.returns *= 1 - ended
        self.lengths *= 1 - ended
        return obs, rewards, dones, time_outs

    def pop(self):
        """(episodes finished since the last pop, their mean return, their mean length)."""
        count, returns, lengths = self.finished.tolist()
        self.finished.zero_()
        return int(count), returns / max(count, 1), lengths / max(count, 1)

    def close(self):
        self.env.close()


def make_env(args, num_envs, seed, device):
    """The training (or evaluation) envs of the chosen backend, behind the Isaac-style interface."""
    if args.env_backend == "isaacgym":
        isaacgymenvs = import_isaacgymenvs()
        task = isaacgymenvs.make(
            seed=seed,
            task=args.task,
            num_envs=num_envs,
            sim_device=args.sim_device,
            rl_device=args.rl_device,
            graphics_device_id=args.graphics_device_id,
            headless=args.headless,
            force_render=not args.headless,  # the viewer shows every step; headless runs render nothing
        )
        return IsaacGymEnv(task, device)
    try:
        envs = gym.make_vec(
            args.env_id,
            num_envs=num_envs,
            vectorization_mode="async" if args.async_envs else "sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        )
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError("%s needs a missing dependency: %s" % (args.env_id, str(e).splitlines()[0]))
    if not isinstance(envs.single_action_space, gym.spaces.Box):
        envs.close()
        raise ConfigError("%s has a %s action space; MEow needs a continuous (Box) one" % (args.env_id, type(envs.single_action_space).__name__))
    # the flow's tanh emits actions in (-1, 1), as Isaac Gym tasks expect; map them onto the env's box
    envs = gym.wrappers.vector.RescaleAction(envs, min_action=-1.0, max_action=1.0)
    return GymnasiumEnv(envs, device, seed)


class RunningMeanStd(nn.Module):
    """Running mean and variance of the observations, on the device (the paper's Isaac Gym runs normalise
    observations this way). Batches merge with Chan et al.'s parallel update; `mask` selects the rows to count.
    Calling it standardises observations and clips them to +-clip.
    """

    def __init__(self, dim, clip=5.0, epsilon=1e-8):
        super().__init__()
        self.clip = clip
        self.epsilon = epsilon
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        # a tiny prior count keeps the first merge finite without host-side checks
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x, mask=None):
        weights = torch.ones(x.shape[0], dtype=torch.float64, device=x.device) if mask is None else mask.to(torch.float64)
        batch_count = weights.sum()
        x = x.to(torch.float64)
        batch_mean = (weights[:, None] * x).sum(0) / batch_count.clamp(min=1)
        batch_var = (weights[:, None] * (x - batch_mean) ** 2).sum(0) / batch_count.clamp(min=1)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.var.copy_((self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total) / total)
        self.mean.add_(delta * batch_count / total)
        self.count.copy_(total)

    def forward(self, x):
        return ((x - self.mean) / torch.sqrt(self.var + self.epsilon)).clamp(-self.clip, self.clip).to(x.dtype)


class MaskedReplayBuffer(ReplayBuffer):
    """ReplayBuffer that takes whole vectorized steps and samples only the rows that are real transitions.

    Dropping the rows of restarting envs would need their count on the host (a device sync every
    step); instead each step is stored whole with a 0/1 mask, and sampling draws from the mask.
    """

    def __init__(self, steps, num_envs, obs_dim, act_dim, device):
        super().__init__(steps * num_envs, obs_dim, act_dim, device)
        self.valid = torch.zeros(steps * num_envs, device=device)

    def add(self, obs, actions, rewards, next_obs, terminated, valid):
        pos = self.pos  # a multiple of num_envs, since the capacity is: a step never wraps
        super().add(obs, actions, rewards, next_obs, terminated)
        self.valid[pos : pos + valid.shape[0]] = valid

    def sample(self, batch_size):
        idx = torch.multinomial(self.valid, batch_size, replacement=True)
        obs, actions, rewards, next_obs, terminated = torch.split(self.data[idx], self.widths, dim=1)
        return Batch(obs, actions, rewards[:, 0], next_obs, terminated[:, 0])

    def state_dict(self):
        state = super().state_dict()
        state["valid"] = self.valid[: self.size].clone()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.valid[: self.size] = state["valid"].to(self.valid)


def step_and_store(envs, rb, obs, dones, actions, bootstrap_timeouts):
    """Step the envs and store the transitions; returns (next_obs, next_dones).

    The step out of an ended episode restarts the env, so it is stored masked out; a time-out
    bootstraps from its last state (terminated = 0) unless time-outs are treated as terminal.
    """
    next_obs, rewards, next_dones, time_outs = envs.step(actions)
    terminated = next_dones & ~time_outs if bootstrap_timeouts else next_dones
    rb.add(obs, actions, rewards, next_obs, terminated.float(), (~dones).float())
    return next_obs, next_dones


def evaluate(policy, obs_rms, envs, episodes):
    """Returns of the deterministic policy (prior mean pushed through the flow): all envs restart together
    and the first episode of each of the first `episodes` envs counts, so short episodes are not favoured."""
    policy.eval()
    count = min(episodes, envs.num_envs)
    obs, _ = envs.reset()
    returns = torch.zeros(envs.num_envs, device=envs.device)
    running = torch.ones(envs.num_envs, dtype=torch.bool, device=envs.device)
    while bool(running[:count].any()):
        with torch.no_grad():
            actions, _ = policy.sample(obs_rms(obs), deterministic=True)
        obs, rewards, dones, _ = envs.step(actions)
        returns += rewards * running
        running &= ~dones
    return returns[:count].tolist()


def crossed(prev_step, step, frequency):
    """True when a multiple of `frequency` lies in (prev_step, step]: a vectorized step adds num_envs steps."""
    return step // frequency > prev_step // frequency


def training_device(args):
    if args.env_backend == "isaacgym":
        return torch.device(args.rl_device)
    return torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")


MACHINE_FLAGS = ("sim_device", "rl_device", "graphics_device_id", "headless", "cuda", "async_envs")


def checkpoint_args(ckpt, path, args):
    """The saved run's Args, with this machine's device and process flags from `args`."""
    if "obs_rms" not in ckpt:
        raise ConfigError("%s has no observation normaliser: not a meow_isaacgym.py model or checkpoint" % path)
    saved = Args(**ckpt["args"])
    for flag in MACHINE_FLAGS:
        setattr(saved, flag, getattr(args, flag))
    return saved


def evaluate_checkpoint(args):
    """--eval-checkpoint: the saved deterministic policy on its own backend and task."""
    ckpt = load_checkpoint(args.eval_checkpoint)
    saved = checkpoint_args(ckpt, args.eval_checkpoint, args)
    check_backend(saved)
    device = training_device(saved)
    envs = make_env(saved, args.eval_episodes, args.seed, device)
    if (envs.obs_dim, envs.act_dim) != (ckpt["obs_dim"], ckpt["act_dim"]):
        envs.close()
        raise ConfigError("%s has observation/action sizes %d/%d, the model %d/%d" % (task_name(saved), envs.obs_dim, envs.act_dim, ckpt["obs_dim"], ckpt["act_dim"]))
    policy = make_policy(saved, ckpt["obs_dim"], ckpt["act_dim"], device)
    policy.load_state_dict(ckpt["model"])
    obs_rms = RunningMeanStd(ckpt["obs_dim"]).to(device)
    obs_rms.load_state_dict(ckpt["obs_rms"])
    returns = evaluate(policy, obs_rms, envs, args.eval_episodes)
    envs.close()
    print("%s: eval return %.2f +- %.2f over %d episodes (deterministic policy)" % (task_name(saved), np.mean(returns), np.std(returns), len(returns)))
    return returns


def resume_args(args):
    """--resume: the checkpoint's args (this machine's devices), except an explicit --total-timesteps (to extend a run)."""
    ckpt = load_checkpoint(args.resume)
    check_resumable(ckpt, args.resume)
    resumed = checkpoint_args(ckpt, args.resume, args)
    if args.total_timesteps is not None:
        resumed.total_timesteps = args.total_timesteps
    resumed.resume = args.resume
    return resumed, ckpt


def main(args):
    try:
        if args.eval_checkpoint:
            check_extras(args)
            return evaluate_checkpoint(args)
        ckpt = None
        if args.resume:
            args, ckpt = resume_args(args)
        note = resolve_defaults(args)
        validate_args(args)
        check_backend(args)
        check_extras(args)
        device = training_device(args)
        start_iteration = ckpt["iteration"] if ckpt else 0
        # Isaac Gym cannot snapshot simulator states, so a resumed run (either backend) starts new episodes
        # in every env and is not bit-identical to an uninterrupted one; it reseeds them past the start
        envs = EpisodeStatistics(make_env(args, args.num_envs, args.seed + start_iteration, device))
        # Isaac Gym allows one simulation per process: evaluation then restarts the training envs
        eval_envs = envs.env if args.env_backend == "isaacgym" else make_env(args, args.eval_episodes, args.seed + 10_000, device)
    except ConfigError as e:
        fail(str(e))
    if note:
        print(note)
    print("hyper-parameters: " + ", ".join("%s=%s" % (k, v) for k, v in vars(args).items()))

    name = task_name(args)
    if ckpt is None:
        run_name = "%s__%s__%s__%d" % (name, args.exp_name, args.seed, int(time.time()))
        run_dir = os.path.join("runs", run_name)
    else:
        run_dir = os.path.dirname(os.path.abspath(args.resume))
        run_name = os.path.basename(run_dir)
        print("resuming %s from step %d" % (run_name, start_iteration * args.num_envs))
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args), name=run_name, save_code=True)
    from torch.utils.tensorboard import SummaryWriter

    # purge_step hides anything a killed run logged after its checkpoint: no duplicate points
    writer = SummaryWriter(run_dir, purge_step=start_iteration * args.num_envs if ckpt else None)
    if ckpt is None:
        writer.add_text("hyperparameters", hparam_table(args))

    seed_everything(args)

    n, obs_dim, act_dim = envs.num_envs, envs.obs_dim, envs.act_dim
    policy, target_policy, optimizer, update = make_learner(args, obs_dim, act_dim, device)
    sample = maybe_compile(policy.sample, args.compile, device)
    obs_rms = RunningMeanStd(obs_dim).to(device)
    rb = MaskedReplayBuffer(args.buffer_steps_per_env, n, obs_dim, act_dim, device)

    last_return, last_eval, loss = float("nan"), float("nan"), None
    if ckpt is not None:
        load_learner(ckpt, policy, target_policy, optimizer)
        obs_rms.load_state_dict(ckpt["obs_rms"])
        if ckpt.get("buffer") is not None:
            rb.load_state_dict(ckpt["buffer"])
        else:
            print("note: the checkpoint has no replay buffer (--save-buffer); updates wait for %d new vectorized steps" % args.learning_starts)
        set_rng_state(ckpt["rng"])
        last_return, last_eval = ckpt["last_return"], ckpt["last_eval"]

    def model_state():
        return {"model": policy.state_dict(), "obs_rms": obs_rms.state_dict(), "args": asdict(args), "obs_dim": obs_dim, "act_dim": act_dim}

    obs, dones = envs.reset()
    iterations = -(-args.total_timesteps // n)  # vectorized steps, rounded up
    start_time = time.time()
    for iteration in range(start_iteration, iterations):
        # the paper's running observation normalisation, fed with the observations of stored transitions
        obs_rms.update(obs, ~dones)
        if iteration < args.learning_starts:
            actions = torch.rand(n, act_dim, device=device) * 2 - 1
        else:
            policy.use_dropout(False)
            with torch.no_grad():
                actions, _ = sample(obs_rms(obs))
        obs, dones = step_and_store(envs, rb, obs, dones, actions, args.bootstrap_timeouts)

        # one gradient step per vectorized step (the paper's Isaac Gym setting); a buffer restored empty
        # refills for learning_starts steps first, so that it holds real transitions to sample
        if iteration >= args.learning_starts and rb.size > args.learning_starts * n:
            batch = rb.sample(args.batch_size)
            loss = update(batch._replace(obs=obs_rms(batch.obs), next_obs=obs_rms(batch.next_obs)))

        prev_step, step = iteration * n, min((iteration + 1) * n, args.total_timesteps)
        if crossed(prev_step, step, args.eval_frequency):
            last_eval = float(np.mean(evaluate(policy, obs_rms, eval_envs, args.eval_episodes)))
            writer.add_scalar("eval/return", last_eval, step)
            if eval_envs is envs.env:
                obs, dones = envs.reset()  # training resumes on new episodes, none of them partly deterministic
        if crossed(prev_step, step, args.log_frequency) or step == args.total_timesteps:
            sps = (step - start_iteration * n) / (time.time() - start_time)
            writer.add_scalar("charts/SPS", sps, step)
            if loss is not None:
                writer.add_scalar("losses/qf_loss", loss.item(), step)
            episodes, mean_return, mean_length = envs.pop()
            if episodes:
                last_return = mean_return
                writer.add_scalar("charts/episodic_return", mean_return, step)
                writer.add_scalar("charts/episodic_length", mean_length, step)
            print(
                "step %d/%d | SPS %.0f | return %.1f | eval %.1f | ETA %s"
                % (step, args.total_timesteps, sps, last_return, last_eval, format_eta((args.total_timesteps - step) / sps))
            )
        if args.save_model and crossed(prev_step, step, args.checkpoint_frequency) and step < args.total_timesteps:
            state = model_state()
            state.update(
                iteration=iteration + 1, step=step, target=target_policy.state_dict(), optimizer=optimizer.state_dict(),
                buffer=rb.state_dict() if args.save_buffer else None, rng=rng_state(), last_return=last_return, last_eval=last_eval,
            )
            save_checkpoint(os.path.join(run_dir, "checkpoint.pt"), state)

    if args.save_model:
        path = os.path.join(run_dir, "%s.pt" % args.exp_name)
        torch.save(model_state(), path)
        print("model saved to %s" % path)
    envs.close()
    if eval_envs is not envs.env:
        eval_envs.close()
    writer.close()


if __name__ == "__main__":
    main(tyro.cli(Args))
