"""MEow: Maximum-Entropy RL via an Energy-Based Normalizing Flow (Chao et al., NeurIPS 2024,
arXiv 2405.13629), for continuous-action gymnasium tasks (MuJoCo).

One conditional normalizing flow is both the policy and the critic: read as an energy-based
model, its unnormalised log-density is the soft Q-function and its state-only normaliser is
the soft value, so Q(s, a) - V(s) = alpha * log pi(a|s) with V computed exactly. Training is
a single soft-Bellman regression of Q onto r + gamma * (1 - terminated) * V_target(s').

Run: python meow_continuous_action.py --env-id Hopper-v4
"""
import contextlib
import math
import os
import random
import sys
import time
from collections import namedtuple
from dataclasses import asdict, dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

from flow_layers import MLP, AdditiveCoupling, ConditionalGaussianScale, Dropout, RewardShift, TanhSquash, keep_mask


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run directory name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, sets `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, use a CUDA GPU when one is available (the CPU otherwise)"""
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
    capture_video: bool = False
    """if toggled, record videos of the evaluation episodes into runs/{run_name}/videos (needs `pip install moviepy`)"""
    save_model: bool = False
    """if toggled, save the weights and args to runs/{run_name}/{exp_name}.pt at the end, and resumable checkpoints on the way"""
    checkpoint_frequency: int = 100_000
    """with --save-model, write runs/{run_name}/checkpoint.pt at the first episode end after every this many steps"""
    save_buffer: bool = False
    """include the replay buffer in checkpoints (large) so that a resumed run continues exactly"""
    resume: Optional[str] = None
    """path of a checkpoint.pt to continue from, in its run directory (its args are used; --total-timesteps may extend it)"""
    eval_checkpoint: Optional[str] = None
    """evaluate the deterministic policy of a saved model or checkpoint for --eval-episodes episodes, then exit"""

    # Algorithm arguments; `None` means "the paper's value for this environment"
    env_id: str = "Hopper-v4"
    """the id of the gymnasium environment"""
    total_timesteps: Optional[int] = None
    """total environment steps (paper default per environment)"""
    learning_starts: Optional[int] = None
    """random actions and no updates before this many steps (paper default per environment)"""
    alpha: Optional[float] = None
    """entropy temperature alpha (paper default per environment)"""
    tau: Optional[float] = None
    """Polyak rate of the target network (paper default per environment)"""
    sigma_max: Optional[float] = None
    """upper bound of the prior's log-std (paper default per environment)"""
    sigma_min: Optional[float] = None
    """lower bound of the prior's log-std (paper default per environment)"""
    buffer_size: int = 1_000_000
    """replay buffer capacity (transitions)"""
    batch_size: int = 256
    """minibatch size of each gradient step"""
    gamma: float = 0.99
    """discount factor"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    max_grad_norm: float = 30.0
    """gradient-norm clipping threshold"""

    # Evaluation and logging
    eval_frequency: int = 10_000
    """evaluate the deterministic policy every this many environment steps"""
    eval_episodes: int = 10
    """episodes per evaluation (on a separate test environment)"""
    log_frequency: int = 1_000
    """read losses from the device and log them (TensorBoard and console) every this many steps"""


# The paper's per-environment hyper-parameters (its Table of MuJoCo settings):
# alpha, tau, sigma_max, sigma_min, learning_starts, total_timesteps.
PAPER_DEFAULTS = {
    "Hopper": dict(alpha=0.25, tau=0.005, sigma_max=-0.3, sigma_min=-5.0, learning_starts=5_000, total_timesteps=1_500_000),
    "HalfCheetah": dict(alpha=0.25, tau=0.003, sigma_max=2.0, sigma_min=-5.0, learning_starts=10_000, total_timesteps=1_500_000),
    "Walker2d": dict(alpha=0.1, tau=0.005, sigma_max=-0.3, sigma_min=-5.0, learning_starts=10_000, total_timesteps=4_000_000),
    "Ant": dict(alpha=0.05, tau=0.0001, sigma_max=-0.3, sigma_min=-5.0, learning_starts=5_000, total_timesteps=4_000_000),
    "Humanoid": dict(alpha=0.125, tau=0.0005, sigma_max=-0.3, sigma_min=-5.0, learning_starts=5_000, total_timesteps=5_000_000),
}


class ConfigError(ValueError):
    """Bad user input: reported as one line on stderr, before anything is written."""


def resolve_defaults(args, table=PAPER_DEFAULTS, fallback="Hopper"):
    """Fill every hyper-parameter left as None with the paper's value for the task.

    Returns a note when the task is not in the table (its defaults then come from `fallback`).
    """
    name = args.env_id.split("-v")[0]
    note = None
    if name not in table:
        note = "note: no paper defaults for %s; using the %s values for unset hyper-parameters" % (args.env_id, fallback)
        name = fallback
    for key, value in table[name].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return note


def validate_algorithm_args(args):
    """Raise ConfigError for hyper-parameters of the MEow update that cannot train (both scripts)."""
    if args.alpha <= 0:
        raise ConfigError("--alpha must be > 0 (got %g)" % args.alpha)
    if args.sigma_min >= args.sigma_max:
        raise ConfigError("--sigma-min must be < --sigma-max (got %g >= %g)" % (args.sigma_min, args.sigma_max))
    if not 0 < args.tau <= 1:
        raise ConfigError("--tau must be in (0, 1] (got %g)" % args.tau)
    if not 0 <= args.gamma <= 1:
        raise ConfigError("--gamma must be in [0, 1] (got %g)" % args.gamma)
    if args.learning_rate <= 0 or args.max_grad_norm <= 0:
        raise ConfigError("--learning-rate and --max-grad-norm must be > 0")
    if args.torch_threads < 1:
        raise ConfigError("--torch-threads must be >= 1")


def validate_args(args):
    """Raise ConfigError for settings that cannot train."""
    validate_algorithm_args(args)
    if args.batch_size < 1 or args.buffer_size < 1:
        raise ConfigError("--batch-size and --buffer-size must be >= 1")
    if args.batch_size > args.buffer_size:
        raise ConfigError("--batch-size (%d) is larger than --buffer-size (%d)" % (args.batch_size, args.buffer_size))
    if args.total_timesteps < 1 or args.learning_starts < 0:
        raise ConfigError("--total-timesteps must be >= 1 and --learning-starts >= 0")
    if min(args.eval_frequency, args.eval_episodes, args.log_frequency, args.checkpoint_frequency) < 1:
        raise ConfigError("--eval-frequency, --eval-episodes, --log-frequency and --checkpoint-frequency must be >= 1")


def check_env_id(env_id):
    if env_id not in gym.registry:
        raise ConfigError("unknown env id %r: not registered in gymnasium (e.g. Hopper-v4, HalfCheetah-v4, Ant-v5)" % env_id)


def make_env(env_id, seed, capture_video=False, video_dir=None):
    """A thunk that builds one env with actions rescaled to [-1, 1] and episode statistics."""

    def thunk():
        try:
            env = gym.make(env_id, render_mode="rgb_array") if capture_video else gym.make(env_id)
        except gym.error.DependencyNotInstalled as e:
            raise ConfigError("%s needs a missing dependency: %s" % (env_id, str(e).splitlines()[0]))
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ConfigError("%s has a %s action space; MEow needs a continuous (Box) one" % (env_id, type(env.action_space).__name__))
        if capture_video:
            env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: True, disable_logger=True)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        # the flow's tanh emits actions in (-1, 1); the wrapper maps them onto the env's box
        env = gym.wrappers.RescaleAction(env, min_action=-1.0, max_action=1.0)
        env.action_space.seed(seed)
        return env

    return thunk


class FlowPolicy(nn.Module):
    """The MEow network: policy, soft Q and soft V from one conditional flow.

    Sampling direction: eps ~ N(0, I) -> z0 = sigma(s) * eps (prior) -> 4 additive couplings -> a = tanh(z).
    """

    def __init__(self, obs_dim, act_dim, alpha, sigma_max, sigma_min, hidden=64, shift_hidden=256):
        super().__init__()
        self.alpha = alpha
        self.act_dim = act_dim
        self.hidden = hidden
        self.prior = ConditionalGaussianScale(MLP([obs_dim, hidden, hidden, act_dim], init="zero"), sigma_max, sigma_min)
        mask = (torch.arange(act_dim) % 2 == 0).float()
        self.couplings = nn.ModuleList(
            AdditiveCoupling(m, MLP([act_dim + obs_dim, hidden, hidden, act_dim], init="orthogonal", layer_norm=True, dropout=0.1))
            for m in (mask, 1 - mask, mask, 1 - mask)  # two pairs with alternating masks
        )
        self.squash = TanhSquash()
        self.reward_shift = RewardShift(obs_dim, shift_hidden)
        self.half_log_2pi = 0.5 * act_dim * math.log(2 * math.pi)
        self._dropouts = [m for m in self.modules() if isinstance(m, Dropout)]  # a plain list: not registered twice

    def use_dropout(self, active):
        """Dropout on for updates, off for acting (as in the paper). The same as train()/eval() for this
        network, whose only mode-dependent layers are dropouts, without walking its ~80 submodules (~0.5 ms)."""
        for layer in self._dropouts:
            layer.training = active

    @contextlib.contextmanager
    def dropout_masks(self, batch_size):
        """Inside this block the dropout layers use keep-masks for `batch_size` rows drawn in one call.

        Under --compile the masks thus enter the compiled loss as inputs: drawn inside it (ATen's
        bernoulli_ or inductor's generator) they cost ~0.9 ms of a 7.3 ms update on a CPU (measured).
        """
        param = next(self.parameters())
        masks = keep_mask((len(self._dropouts), batch_size, self.hidden), self._dropouts[0].p, param.device, param.dtype)
        for layer, mask in zip(self._dropouts, masks):
            layer.mask = mask
        try:
            yield
        finally:
            for layer in self._dropouts:
                layer.mask = None

    def sample(self, obs, deterministic=False):
        """Actions in (-1, 1) and their log-probability. Deterministic pushes the prior mean (eps = 0) through the flow."""
        eps = obs.new_zeros(obs.shape[0], self.act_dim) if deterministic else torch.randn(obs.shape[0], self.act_dim, device=obs.device)
        log_prob = -0.5 * eps.pow(2).sum(-1) - self.half_log_2pi
        z, log_det = self.prior(eps, obs)
        log_prob = log_prob - log_det
        for coupling in self.couplings:
            z, log_det = coupling(z, obs)
            log_prob = log_prob - log_det
        actions, log_det = self.squash(z)
        return actions, log_prob - log_det

    def energy_and_normaliser(self, obs, actions):
        """Split log pi(a|s) = energy(s, a) - log Z(s) (the energy-based reading of the flow).

        energy = -1/2 |eps|^2 - sum_j log(1 - a_j^2) (+ coupling log-dets, zero for additive ones);
        log Z(s) = sum_j log sigma_j(s) + (d/2) log 2 pi, from the prior's state-only scaling.
        """
        z, energy = self.squash.inverse(actions)
        for coupling in reversed(self.couplings):
            z, log_det = coupling.inverse(z, obs)
            energy = energy + log_det
        eps, log_det_prior = self.prior.inverse(z, obs)
        energy = energy - 0.5 * eps.pow(2).sum(-1)
        log_z = self.half_log_2pi - log_det_prior
        return energy, log_z

    def log_prob(self, obs, actions):
        energy, log_z = self.energy_and_normaliser(obs, actions)
        return energy - log_z

    def q_and_v(self, obs, actions):
        """Soft Q and soft V, [B, 2] each, one column per reward shift b_k(s).

        Q_k = alpha * (b_k(s) + energy(s, a)),  V_k = alpha * (b_k(s) + log Z(s)),  so Q_k - V_k = alpha * log pi.
        One pass through the couplings serves both columns: the shifts depend on s only.
        """
        energy, log_z = self.energy_and_normaliser(obs, actions)
        shift = self.reward_shift(obs)
        return self.alpha * (shift + energy[:, None]), self.alpha * (shift + log_z[:, None])

    def value(self, obs):
        """The exact soft value V_k(s) = alpha * log integral exp(Q_k(s, a) / alpha) da, [B, 2].

        Closed form (the prior is Gaussian and the couplings are volume preserving), so no
        coupling layer and no sampling is needed.
        """
        log_z = self.half_log_2pi + self.prior.log_std(obs).sum(-1)
        return self.alpha * (self.reward_shift(obs) + log_z[:, None])


Batch = namedtuple("Batch", ["obs", "actions", "rewards", "next_obs", "terminated"])


class ReplayBuffer:
    """A ring buffer of transitions on the training device.

    All fields live side by side in one [capacity, width] tensor so that a minibatch is one gather.
    `add` takes a batch of N transitions (N = 1 for a single env, N = num_envs for vector envs).
    """

    def __init__(self, capacity, obs_dim, act_dim, device):
        self.widths = [obs_dim, act_dim, 1, obs_dim, 1]
        self.data = torch.zeros(capacity, sum(self.widths), device=device)
        self.capacity = capacity
        self.pos = 0
        self.size = 0

    def add(self, obs, actions, rewards, next_obs, terminated):
        rows = torch.cat([obs, actions, rewards[:, None], next_obs, terminated[:, None]], dim=1).to(self.data)
        n = rows.shape[0]
        if n > self.capacity:
            raise ValueError("cannot add %d transitions to a buffer of capacity %d" % (n, self.capacity))
        first = min(n, self.capacity - self.pos)
        self.data[self.pos : self.pos + first] = rows[:first]
        self.data[: n - first] = rows[first:]  # wrap around
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def state_dict(self):
        return {"data": self.data[: self.size].clone(), "pos": self.pos, "size": self.size}

    def load_state_dict(self, state):
        self.size, self.pos = state["size"], state["pos"]
        self.data[: self.size] = state["data"].to(self.data)

    def sample(self, batch_size):
        idx = torch.randint(0, self.size, (batch_size,), device=self.data.device)
        obs, actions, rewards, next_obs, terminated = torch.split(self.data[idx], self.widths, dim=1)
        return Batch(obs, actions, rewards[:, 0], next_obs, terminated[:, 0])


def soft_bellman_target(target_policy, rewards, next_obs, terminated, gamma):
    """y = r + gamma * (1 - terminated) * min_k V_target,k(s'): time-outs are not terminations, so they bootstrap."""
    with torch.no_grad():
        next_v = target_policy.value(next_obs).min(dim=1).values
        return rewards + gamma * (1.0 - terminated) * next_v


def meow_loss(policy, target_policy, batch, gamma):
    """The single MEow objective: MSE of both Q columns against the shared soft-Bellman target."""
    y = soft_bellman_target(target_policy, batch.rewards, batch.next_obs, batch.terminated, gamma)
    q, _ = policy.q_and_v(batch.obs, batch.actions)
    return F.mse_loss(q, y[:, None].expand_as(q))


def make_optimizer(params, lr):
    """Adam, fused (one kernel for all parameters) where this torch supports it, else foreach."""
    params = list(params)
    for kwargs in (dict(fused=True), dict(foreach=True), {}):
        try:
            return torch.optim.Adam(params, lr=lr, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            continue


def flatten_parameters(module):
    """Move every parameter of `module`, and its gradient, into one flat tensor; return that tensor.

    Each parameter becomes a view of the flat tensor (and its .grad a view of the flat gradient), so
    Adam, the gradient clip, zeroing and the Polyak average each run once over one buffer instead of
    once per tensor (72 of them): the same arithmetic, ~0.7 ms less per update on a CPU (Hopper sizes).
    Call it after the module is on its device; the gradient is zeroed in place from then on, never set
    to None.
    """
    params = list(module.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params]).requires_grad_(params[0].requires_grad)
    flat.grad = torch.zeros_like(flat) if flat.requires_grad else None
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        if flat.grad is not None:
            p.grad = flat.grad[offset : offset + n].view_as(p)  # backward accumulates into it in place
        offset += n
    return flat


def maybe_compile(fn, enabled, device="cpu"):
    """torch.compile(fn) when asked and available; otherwise fn, with a one-line warning.

    torch.compile works at the first call, so a backend that fails only then (e.g. no C++ compiler)
    also falls back to fn, with the warning.
    """
    if not enabled:
        return fn
    def ignored(reason):
        print("warning: %s; --compile ignored" % reason, file=sys.stderr)
        return fn

    if not hasattr(torch, "compile"):
        return ignored("this torch has no torch.compile")
    try:
        if torch.device(device).type == "cpu":
            import torch._inductor.config as inductor_config

            # random draws in compiled code (the action noise) come from ATen's generator, as in eager
            # mode: the same numbers, and faster than inductor's own on a CPU (measured)
            inductor_config.fallback_random = True
        current = [torch.compile(fn, dynamic=False)]
    except Exception as e:  # the backend is unavailable on this platform
        return ignored("torch.compile unavailable (%s)" % str(e).strip().splitlines()[0])

    def call(*args, **kwargs):
        try:
            return current[0](*args, **kwargs)
        except Exception as e:
            if current[0] is fn:
                raise
            current[0] = ignored("torch.compile failed (%s)" % str(e).strip().splitlines()[0])
            return fn(*args, **kwargs)

    return call


def make_update(policy, target_policy, lr, gamma, tau, max_grad_norm, compile=False):
    """Build the per-step update: one gradient step on the MEow loss, then the Polyak update.

    Flattens the parameters of both networks (see flatten_parameters) and returns (update, optimizer).
    update(batch) returns the loss as a device tensor: nothing in it waits for the device (no .item()).
    """
    params = flatten_parameters(policy)
    target_params = flatten_parameters(target_policy)
    optimizer = make_optimizer([params], lr)
    loss_fn = maybe_compile(meow_loss, compile, params.device)

    def update(batch):
        policy.use_dropout(True)
        with policy.dropout_masks(batch.obs.shape[0]):
            loss = loss_fn(policy, target_policy, batch, gamma)
        params.grad.zero_()
        loss.backward()
        nn.utils.clip_grad_norm_([params], max_grad_norm)
        optimizer.step()
        with torch.no_grad():
            target_params.lerp_(params, tau)  # target <- (1 - tau) * target + tau * online
        return loss.detach()

    return update, optimizer


def make_policy(args, obs_dim, act_dim, device):
    return FlowPolicy(obs_dim, act_dim, args.alpha, args.sigma_max, args.sigma_min).to(device)


def make_learner(args, obs_dim, act_dim, device):
    """The MEow network, its Polyak-averaged target copy, Adam, and the per-step update."""
    policy = make_policy(args, obs_dim, act_dim, device)
    target_policy = make_policy(args, obs_dim, act_dim, device).eval()
    target_policy.load_state_dict(policy.state_dict())
    target_policy.requires_grad_(False)
    update, optimizer = make_update(policy, target_policy, args.learning_rate, args.gamma, args.tau, args.max_grad_norm, args.compile)
    return policy, target_policy, optimizer, update


def load_learner(ckpt, policy, target_policy, optimizer):
    """Restore from a checkpoint what make_learner built."""
    policy.load_state_dict(ckpt["model"])
    target_policy.load_state_dict(ckpt["target"])
    optimizer.load_state_dict(ckpt["optimizer"])


def seed_everything(args):
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads)


def as_batch(*arrays, device):
    """numpy values of one env step -> float32 tensors with a leading batch dim of 1."""
    return [torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)[None] for x in arrays]


def evaluate(policy, env, episodes, device):
    """Returns of the deterministic policy (prior mean pushed through the flow), one per episode."""
    policy.eval()
    returns = []
    for _ in range(episodes):
        obs, _ = env.reset()
        done, total = False, 0.0
        while not done:
            with torch.no_grad():
                action, _ = policy.sample(torch.as_tensor(obs, dtype=torch.float32, device=device)[None], deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action[0].cpu().numpy())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def hparam_table(args):
    return "|param|value|\n|-|-|\n%s" % "\n".join("|%s|%s|" % (k, v) for k, v in vars(args).items())


def format_eta(seconds):
    seconds = int(max(seconds, 0))
    return "%dh%02dm%02ds" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def fail(message):
    print("error: %s" % message, file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------- checkpoints
def rng_state():
    """Every global RNG the loop draws from (python, numpy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, state):
    """torch.save through a temporary file, so a run killed while saving keeps its previous checkpoint."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    if not os.path.isfile(path):
        raise ConfigError("no checkpoint at %s" % path)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise ConfigError("cannot read checkpoint %s: %s" % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise ConfigError("%s is not a MEow model or checkpoint (no 'model'/'args' entries)" % path)
    return ckpt


def env_rng_state(env):
    """RNG states of an env between episodes: its reset noise and its action space (random warm-up actions)."""
    return {"env": env.unwrapped.np_random.bit_generator.state, "action_space": env.action_space.np_random.bit_generator.state}


def set_env_rng_state(env, state):
    env.unwrapped.np_random.bit_generator.state = state["env"]
    env.action_space.np_random.bit_generator.state = state["action_space"]


def evaluate_checkpoint(args, ckpt):
    """--eval-checkpoint: the deterministic policy of a saved model, no training and no buffer."""
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    saved = Args(**ckpt["args"])
    video_dir = os.path.join(os.path.dirname(os.path.abspath(args.eval_checkpoint)), "videos_eval")
    env = make_env(saved.env_id, args.seed, args.capture_video, video_dir)()
    env.reset(seed=args.seed)
    policy = make_policy(saved, ckpt["obs_dim"], ckpt["act_dim"], device)
    policy.load_state_dict(ckpt["model"])
    returns = evaluate(policy, env, args.eval_episodes, device)
    env.close()
    print("%s: eval return %.2f +- %.2f over %d episodes (deterministic policy)" % (saved.env_id, np.mean(returns), np.std(returns), len(returns)))
    return returns


def check_extras(args):
    """Optional packages that some flags need."""
    if args.capture_video:
        try:
            import moviepy  # noqa: F401
        except ImportError:
            raise ConfigError("--capture-video needs moviepy: pip install moviepy")
    if args.track:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("--track needs wandb: pip install wandb")


def setup(args):
    """Work that may fail on bad input: defaults, validation, env id. Writes nothing to disk."""
    note = resolve_defaults(args)
    validate_args(args)
    check_env_id(args.env_id)
    check_extras(args)
    return note


def check_resumable(ckpt, path):
    """Raise ConfigError unless `ckpt` is a training checkpoint this version can continue (both scripts)."""
    if "optimizer" not in ckpt or "step" not in ckpt:
        raise ConfigError("%s is a saved model, not a checkpoint.pt to resume (--eval-checkpoint evaluates it)" % path)
    if [len(group["params"]) for group in ckpt["optimizer"]["param_groups"]] != [1]:
        raise ConfigError("%s holds one Adam state per tensor (written before the flat parameter buffer): this version "
                          "cannot resume it (--eval-checkpoint still evaluates it)" % path)


def resume_args(args):
    """--resume: the checkpoint's args, except an explicit --total-timesteps (to extend a run)."""
    ckpt = load_checkpoint(args.resume)
    check_resumable(ckpt, args.resume)
    resumed = Args(**ckpt["args"])
    if args.total_timesteps is not None:
        resumed.total_timesteps = args.total_timesteps
    resumed.resume = args.resume
    return resumed, ckpt


def main(args):
    try:
        if args.eval_checkpoint:
            ckpt = load_checkpoint(args.eval_checkpoint)
            check_env_id(ckpt["args"]["env_id"])
            check_extras(args)
            return evaluate_checkpoint(args, ckpt)
        ckpt = None
        if args.resume:
            args, ckpt = resume_args(args)
        note = setup(args)
        env = make_env(args.env_id, args.seed)()
    except ConfigError as e:
        fail(str(e))
    if note:
        print(note)
    print("hyper-parameters: " + ", ".join("%s=%s" % (k, v) for k, v in vars(args).items()))

    if ckpt is None:
        run_name = "%s__%s__%s__%d" % (args.env_id, args.exp_name, args.seed, int(time.time()))
        run_dir = os.path.join("runs", run_name)
        start_step = 0
    else:
        run_dir = os.path.dirname(os.path.abspath(args.resume))
        run_name = os.path.basename(run_dir)
        start_step = ckpt["step"]
        print("resuming %s from step %d" % (run_name, start_step))
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args), name=run_name, save_code=True)
    from torch.utils.tensorboard import SummaryWriter

    # purge_step hides anything a killed run logged after its checkpoint: no duplicate points
    writer = SummaryWriter(run_dir, purge_step=start_step if ckpt else None)
    if ckpt is None:
        writer.add_text("hyperparameters", hparam_table(args))

    seed_everything(args)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    eval_env = make_env(args.env_id, args.seed + 10_000, args.capture_video, os.path.join(run_dir, "videos"))()
    eval_env.reset(seed=args.seed + 10_000)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]

    policy, target_policy, optimizer, update = make_learner(args, obs_dim, act_dim, device)
    sample = maybe_compile(policy.sample, args.compile, device)
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)

    obs, _ = env.reset(seed=args.seed)
    last_return, last_eval, loss = float("nan"), float("nan"), None
    if ckpt is not None:
        load_learner(ckpt, policy, target_policy, optimizer)
        if ckpt.get("buffer") is not None:
            rb.load_state_dict(ckpt["buffer"])
        else:
            print("note: the checkpoint has no replay buffer (--save-buffer); updates wait until it holds a batch")
        set_rng_state(ckpt["rng"])
        set_env_rng_state(env, ckpt["env_rng"])
        set_env_rng_state(eval_env, ckpt["eval_env_rng"])
        last_return, last_eval = ckpt["last_return"], ckpt["last_eval"]
        obs, _ = env.reset()  # the checkpoint was taken between two episodes
    next_checkpoint = (start_step // args.checkpoint_frequency + 1) * args.checkpoint_frequency

    start_time = time.time()
    for global_step in range(start_step, args.total_timesteps):
        if global_step < args.learning_starts:
            action = env.action_space.sample()
        else:
            policy.use_dropout(False)
            with torch.no_grad():
                action, _ = sample(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])
            action = action[0].cpu().numpy()

        next_obs, reward, terminated, truncated, info = env.step(action)
        # next_obs is the true successor even at a time-out (a single env does not autoreset), so the
        # transition is stored as is: a time-out bootstraps from it, a termination does not (terminated=1)
        rb.add(*as_batch(obs, action, reward, next_obs, terminated, device=device))
        obs = next_obs
        episode_over = terminated or truncated
        if episode_over:
            last_return = float(info["episode"]["r"])
            writer.add_scalar("charts/episodic_return", last_return, global_step)
            writer.add_scalar("charts/episodic_length", int(info["episode"]["l"]), global_step)

        if global_step >= args.learning_starts and rb.size >= args.batch_size:
            loss = update(rb.sample(args.batch_size))

        step = global_step + 1
        if step % args.eval_frequency == 0:
            last_eval = float(np.mean(evaluate(policy, eval_env, args.eval_episodes, device)))
            writer.add_scalar("eval/return", last_eval, step)
        if step % args.log_frequency == 0 or step == args.total_timesteps:
            sps = (step - start_step) / (time.time() - start_time)
            writer.add_scalar("charts/SPS", sps, step)
            if loss is not None:
                writer.add_scalar("losses/qf_loss", loss.item(), step)
            print(
                "step %d/%d | SPS %.0f | return %.1f | eval %.1f | ETA %s"
                % (step, args.total_timesteps, sps, last_return, last_eval, format_eta((args.total_timesteps - step) / sps))
            )

        if episode_over:
            # checkpoint between episodes: then the env's RNG state is all of its state we need
            if args.save_model and step >= next_checkpoint and step < args.total_timesteps:
                save_checkpoint(
                    os.path.join(run_dir, "checkpoint.pt"),
                    {
                        "step": step, "args": asdict(args), "obs_dim": obs_dim, "act_dim": act_dim,
                        "model": policy.state_dict(), "target": target_policy.state_dict(), "optimizer": optimizer.state_dict(),
                        "buffer": rb.state_dict() if args.save_buffer else None,
                        "rng": rng_state(), "env_rng": env_rng_state(env), "eval_env_rng": env_rng_state(eval_env),
                        "last_return": last_return, "last_eval": last_eval,
                    },
                )
                next_checkpoint = (step // args.checkpoint_frequency + 1) * args.checkpoint_frequency
            obs, _ = env.reset()

    if args.save_model:
        path = os.path.join(run_dir, "%s.pt" % args.exp_name)
        torch.save({"model": policy.state_dict(), "args": asdict(args), "obs_dim": obs_dim, "act_dim": act_dim}, path)
        print("model saved to %s" % path)
    env.close()
    eval_env.close()
    writer.close()


if __name__ == "__main__":
    main(tyro.cli(Args))
