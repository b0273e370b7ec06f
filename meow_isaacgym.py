"""MEow (Chao et al., NeurIPS 2024, arXiv 2405.13629) on batched simulators: Isaac Gym on a GPU, or
N copies of a gymnasium task through gymnasium's vector API on any machine.

This file holds the whole algorithm, as meow_continuous_action.py does: the network, the single
soft-Bellman loss and the update are the same text in both (a test keeps the copies identical). What
differs is the environment side: N envs step at once and hand back torch tensors on the training
device, so the replay buffer, the observation normaliser, sampling and the targets all stay on that
device, and one gradient step follows each vectorized step (the paper's Isaac Gym setting).
The equations, named where the code computes them:

  (E1) flow        a = tanh(z_K), z_k = z_{k-1} + t_k(masked z_{k-1}, s), z_0 = sigma(s) * eps, eps ~ N(0, I)
                   log sigma(s) = sigma_min + (sigma_max - sigma_min) * (tanh(h(s)) + 1) / 2
  (E2) log-density log pi(a|s) = energy(s, a) - log Z(s),
                   energy = -|eps|^2 / 2 - sum_j log(1 - a_j^2),  log Z = sum_j log sigma_j(s) + d/2 log 2 pi
  (E3) soft Q      Q_k(s, a) = alpha * (b_k(s) + energy(s, a))         (b_1, b_2: learnable reward shifts)
  (E4) soft V      V_k(s) = alpha * (b_k(s) + log Z(s)) = alpha log int exp(Q_k(s, a) / alpha) da
  (E5) target      y = r + gamma * (1 - terminated) * min_k V_target,k(s')
  (E6) loss        L = mean over the batch and k of (Q_k(s, a) - y)^2
  (E7) Polyak      theta_target <- (1 - tau) * theta_target + tau * theta

Unlike SAC there is no actor loss and no alpha loss: the policy is the flow that Q is read from, so the
one regression (E6) trains both, and alpha is a fixed per-task setting of the paper, not tuned against a
target entropy. The two shifts b_k and the min over them in (E5) play the part of SAC's clipped double Q.

Run: python meow_isaacgym.py --task Ant --headless                      (Isaac Gym Preview 4, GPU)
     python meow_isaacgym.py --env-backend gymnasium --env-id Ant-v4     (anywhere, CPU)
The file reads top to bottom as the method: arguments, the network, the target and loss, the update,
the replay buffer, the envs (the part that differs), the loop; support code that is not the method
follows the loop.
Kept valid for Python 3.8 and torch >= 1.13, which Isaac Gym Preview 4 machines run; gymnasium is
imported only by the gymnasium backend.
"""
# Isaac Gym refuses to load once torch has been imported, so it must come first; where it is not
# installed, the isaacgym backend reports how to install it when it is chosen (see make_env).
try:
    import isaacgym  # noqa: F401
except ImportError:
    pass

import contextlib
import math
import os
import random
import signal
import sys
import time
from collections import deque, namedtuple
from dataclasses import asdict, dataclass, fields
from typing import Literal, Optional

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
    """gymnasium backend: train on a CUDA GPU when one is available (the isaacgym backend trains on --rl-device)"""
    torch_threads: Optional[int] = None
    """CPU threads of torch ops (default: $OMP_NUM_THREADS if set, else this machine's cores, at most 2: more did not help)"""
    compile: bool = True
    """torch.compile the update and the action sampling, in runs of at least 20,000 updates (shorter runs would spend more time compiling than they save); --no-compile: eager"""
    track: bool = False
    """if toggled, log the run to Weights & Biases (needs `pip install wandb`; WANDB_MODE=offline works without network)"""
    wandb_project_name: str = "meow"
    """the Weights & Biases project name"""
    wandb_entity: Optional[str] = None
    """the Weights & Biases entity (team)"""
    save_model: bool = False
    """if toggled, save the model to runs/{run_name}/{exp_name}.pt at the end, and resumable checkpoints on the way"""
    checkpoint_frequency: int = 100_000
    """with --save-model, write runs/{run_name}/checkpoint.pt every this many env steps (all envs), and at the next vectorized step after SIGTERM or SIGUSR1, then stop"""
    save_buffer: bool = False
    """include the replay buffer in checkpoints (large)"""
    resume: Optional[str] = None
    """path of a checkpoint.pt to continue from: the run's args come from the checkpoint, the machine flags (devices, headless, async-envs, torch-threads, compile, track, wandb-*) from this command line, and --total-timesteps may extend the run. Simulator states are not saved (Isaac Gym cannot snapshot them), so every env starts a new episode: a resumed run is not bit-identical to an uninterrupted one"""
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
    timeouts: Optional[Literal["bootstrap", "terminal"]] = None
    """a time-out either bootstraps from its last state or ends the return like a termination (default: terminal on the isaacgym backend, as the paper's Isaac runs; bootstrap on the gymnasium backend, as meow_continuous_action.py)"""

    # Algorithm arguments; `None` means "the paper's value for this task"
    total_timesteps: Optional[int] = None
    """env steps over all envs; each vectorized step is num-envs env steps and one update (default: the paper's updates x num-envs on the isaacgym backend; 1,000,000 on the gymnasium backend, a CPU-sized run)"""
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
    max_grad_norm: Optional[float] = None
    """gradient-norm clipping threshold (default 60: the authors clip at 30 a loss they halve; this loss is not halved)"""

    # Evaluation and logging
    eval_frequency: Optional[int] = None
    """evaluate the deterministic policy every this many env steps (all envs); default: 100,000 on the gymnasium backend, and on the isaacgym backend once at the end of the run, since there each evaluation restarts the training envs (one simulation per process)"""
    eval_episodes: int = 10
    """episodes per evaluation: the first episode of each of this many envs, restarted together"""
    log_frequency: int = 10_000
    """read losses, diagnostics and episode statistics from the device, check them, and log them every this many env steps (all envs)"""


# The paper's Isaac Gym hyper-parameters. `updates` counts vectorized steps (one gradient step each), the
# counter of the authors' trainer and of the paper's Isaac curves: a run is updates x num_envs env steps.
# Each batch size is the authors' 131072 / num_envs. AllegroHand: the authors' files disagree (a tuner
# with 1 env, a launch file with 512); the paper's figure says 512 envs, batch 256.
PAPER_DEFAULTS = {
    "Ant": dict(num_envs=128, batch_size=1024, alpha=0.075, tau=0.0005, sigma_max=2.0, sigma_min=-5.0, updates=1_000_000),
    "Humanoid": dict(num_envs=128, batch_size=1024, alpha=0.25, tau=0.00025, sigma_max=-0.3, sigma_min=-5.0, updates=1_000_000),
    "Ingenuity": dict(num_envs=128, batch_size=1024, alpha=0.025, tau=0.0025, sigma_max=-0.3, sigma_min=-4.0, updates=500_000),
    "Anymal": dict(num_envs=128, batch_size=1024, alpha=0.00075, tau=0.025, sigma_max=-1.0, sigma_min=-5.0, updates=1_000_000),
    "AllegroHand": dict(num_envs=512, batch_size=256, alpha=0.1, tau=0.001, sigma_max=-0.3, sigma_min=-4.0, updates=1_000_000),
    "FrankaCabinet": dict(num_envs=512, batch_size=256, alpha=0.075, tau=0.01, sigma_max=-0.3, sigma_min=-5.0, updates=1_000_000),
}
# The authors halve the squared error and clip the gradient norm at 30. This loss (E6) is not halved, so
# its gradient is twice theirs and a clip of 60 clips the same steps; Adam is otherwise scale-free.
PAPER_MAX_GRAD_NORM = 60.0
# On a CPU the copies step one after another and each adds 15000 steps of replay memory: 8 keeps
# Humanoid-v4's near 0.4 GB. --num-envs 128 restores the paper's ratio of updates to env steps.
GYMNASIUM_NUM_ENVS = 8
GYMNASIUM_TOTAL_TIMESTEPS = 1_000_000  # a length a CPU runs in hours (the paper's 1M updates x 8 envs would take weeks)
GYMNASIUM_EVAL_FREQUENCY = 100_000

ISAACGYM_MISSING = (
    "the isaacgym backend needs Isaac Gym Preview 4 and IsaacGymEnvs (%s): install Isaac Gym from NVIDIA's tarball "
    "(pip install -e isaacgym/python) and IsaacGymEnvs (git clone https://github.com/isaac-sim/IsaacGymEnvs; "
    "pip install -e IsaacGymEnvs) on Python 3.8, see the README; or train without them with --env-backend gymnasium"
)


# ================================================================ the method (the same text in meow_continuous_action.py)
class FlowPolicy(nn.Module):
    """The MEow network: policy, soft Q and soft V from one conditional flow (E1).

    Sampling direction: eps ~ N(0, I) -> z0 = sigma(s) * eps (prior) -> 4 additive couplings -> a = tanh(z).
    Dropout in the couplings is on only inside the update, as in the paper; acting, evaluation and
    diagnostics see the network without it.
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
        self.use_dropout(False)

    def use_dropout(self, active):
        """train()/eval() for this network, whose only mode-dependent layers are the dropouts, without
        walking every submodule."""
        for layer in self._dropouts:
            layer.training = active

    @contextlib.contextmanager
    def dropout_masks(self, *batch_shape):
        """Inside this block the dropout layers use keep-masks for inputs of `batch_shape` (e.g. [2, B]: one
        set per Q column) drawn in one call, so that a compiled loss takes them as inputs instead of
        drawing them itself."""
        param = next(self.parameters())
        masks = keep_mask((len(self._dropouts), *batch_shape, self.hidden), self._dropouts[0].p, param.device, param.dtype)
        for layer, mask in zip(self._dropouts, masks):
            layer.mask = mask
        try:
            yield
        finally:
            for layer in self._dropouts:
                layer.mask = None

    def sample(self, obs, deterministic=False):
        """Actions in (-1, 1) and their log-probability (E1, E2). Deterministic pushes the prior mean (eps = 0) through the flow."""
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
        """Split log pi(a|s) = energy(s, a) - log Z(s), the energy-based reading of the flow (E2).

        The rule: a term that depends on the action goes to the energy, a term of the state alone to
        log Z. So the tanh's log-det and the Gaussian's -|eps|^2 / 2 are energy, as are the couplings'
        log-dets (0 for additive couplings, which preserve volume); the prior's scale sigma(s) is log Z.
        Actions may carry leading axes that obs lacks ([2, B, d] against [B, n]): obs broadcasts over them.
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
        """Soft Q (E3) and soft V (E4), [B, 2] each, one column per reward shift b_k(s); Q_k - V_k = alpha * log pi.

        The two shifts cancel in pi; with the min over them in the target (E5) they are MEow's clipped
        double Q, in one network. Each column takes its own pass through the couplings (the actions stacked
        twice on a new leading axis), so that in updates each draws its own dropout masks, as in the authors'
        code: one shared pass has the same expected loss but not the same gradient noise (docs/implementation.md).
        The observation broadcasts over that axis, so what sees only the state (the prior, the observation's
        part of each coupling's first layer) is computed once for both passes.
        """
        energy, log_z = self.energy_and_normaliser(obs, actions.expand(2, *actions.shape))  # [2, B], [B]
        shift = self.reward_shift(obs)
        return self.alpha * (shift + energy.t()), self.alpha * (shift + log_z[:, None])

    def value(self, obs):
        """The exact soft value V_k(s) (E4), [B, 2]: log Z depends on the prior alone (the rule in
        energy_and_normaliser), so no coupling layer and no sampling is needed."""
        log_z = self.half_log_2pi + self.prior.log_std(obs).sum(-1)
        return self.alpha * (self.reward_shift(obs) + log_z[:, None])


def soft_bellman_target(target_policy, rewards, next_obs, terminated, gamma):
    """(E5). `terminated` is 1 only where the stored transition must not bootstrap; the loop decides what
    a time-out stores."""
    with torch.no_grad():
        next_v = target_policy.value(next_obs).min(dim=1).values
        return rewards + gamma * (1.0 - terminated) * next_v


def meow_loss(policy, target_policy, batch, gamma):
    """The single MEow objective (E6): MSE of both Q columns against the shared soft-Bellman target."""
    y = soft_bellman_target(target_policy, batch.rewards, batch.next_obs, batch.terminated, gamma)
    q, _ = policy.q_and_v(batch.obs, batch.actions)
    return F.mse_loss(q, y[:, None].expand_as(q))


def make_update(policy, target_policy, lr, gamma, tau, max_grad_norm, compile=False):
    """Build the per-step update: one gradient step on the MEow loss (E6), then the Polyak average (E7).

    Returns (update, optimizer). update(batch) returns the loss as a device tensor: nothing in it waits
    for the device (no .item()), so the host runs ahead of a GPU. Dropout is on only inside update.
    """
    params = flatten_parameters(policy)
    target_params = flatten_parameters(target_policy)
    optimizer = make_optimizer([params], lr)
    loss_fn = maybe_compile(meow_loss, compile, params.device, "the update")

    def update(batch):
        policy.use_dropout(True)
        with policy.dropout_masks(2, batch.obs.shape[0]):  # one set per Q column
            loss = loss_fn(policy, target_policy, batch, gamma)
        policy.use_dropout(False)
        params.grad.zero_()
        loss.backward()
        nn.utils.clip_grad_norm_([params], max_grad_norm)
        optimizer.step()
        with torch.no_grad():
            target_params.lerp_(params, tau)  # (E7)
        return loss.detach()

    return update, optimizer


def diagnostics(policy, batch):
    """What users of a MaxEnt agent look at, as device tensors (read only at log points): batch means of
    Q and V, the acting policy's entropy -E[log pi] (exact per sample: the flow gives log pi), the prior's
    mean log-std, and the share of action components the tanh pushes past |a| > 0.99."""
    with torch.no_grad():
        q, v = policy.q_and_v(batch.obs, batch.actions)
        actions, log_prob = policy.sample(batch.obs)
        return {
            "losses/q_values": q.mean(),
            "losses/v_values": v.mean(),
            "charts/entropy": -log_prob.mean(),
            "charts/prior_log_std": policy.prior.log_std(batch.obs).mean(),
            "charts/action_saturation": (actions.abs() > 0.99).float().mean(),
        }
# ================================================================ end of the method


Batch = namedtuple("Batch", ["obs", "actions", "rewards", "next_obs", "terminated"])


class ReplayBuffer:
    """A ring buffer of whole vectorized steps on the training device, sampling only real transitions.

    All fields live side by side in one [capacity, width] tensor so that a minibatch is one gather. The
    step out of an ended episode (the env restarts during it) is no transition: dropping its rows would
    need their count on the host (a device sync every step), so each step is stored whole with a 0/1
    mask, and sampling draws from the mask.
    """

    def __init__(self, steps, num_envs, obs_dim, act_dim, device):
        self.widths = [obs_dim, act_dim, 1, obs_dim, 1]
        self.capacity = steps * num_envs  # a multiple of num_envs: a step never wraps
        self.data = torch.zeros(self.capacity, sum(self.widths), device=device)
        self.valid = torch.zeros(self.capacity, device=device)
        self.pos = 0
        self.size = 0

    def add(self, obs, actions, rewards, next_obs, terminated, valid):
        n = obs.shape[0]
        self.data[self.pos : self.pos + n] = torch.cat([obs, actions, rewards[:, None], next_obs, terminated[:, None]], dim=1)
        self.valid[self.pos : self.pos + n] = valid
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size):
        idx = torch.multinomial(self.valid, batch_size, replacement=True)
        obs, actions, rewards, next_obs, terminated = torch.split(self.data[idx], self.widths, dim=1)
        return Batch(obs, actions, rewards[:, 0], next_obs, terminated[:, 0])

    def state_dict(self):
        return {"data": self.data[: self.size].clone(), "valid": self.valid[: self.size].clone(), "pos": self.pos, "size": self.size}

    def load_state_dict(self, state):
        self.size, self.pos = state["size"], state["pos"]
        self.data[: self.size] = state["data"].to(self.data)
        self.valid[: self.size] = state["valid"].to(self.valid)


def step_and_store(envs, rb, obs, dones, actions, bootstrap_timeouts):
    """Step the envs and store the transitions; returns (next_obs, next_dones, rewards, cut): cut marks
    the episodes a time-out ended whose last transition bootstraps.

    The step out of an ended episode restarts the env, so it is stored masked out; a time-out
    bootstraps from its last state (terminated = 0) unless time-outs are treated as terminal.
    """
    next_obs, rewards, next_dones, time_outs = envs.step(actions)
    terminated = next_dones & ~time_outs if bootstrap_timeouts else next_dones
    rb.add(obs, actions, rewards, next_obs, terminated.float(), (~dones).float())
    return next_obs, next_dones, rewards, next_dones & ~terminated


def evaluate(policy, obs_rms, envs, episodes):
    """Returns and lengths (steps) of the deterministic policy's episodes (prior mean pushed through the flow):
    all envs restart together and the first episode of each of the first `episodes` envs counts, so short
    episodes are not favoured."""
    count = min(episodes, envs.num_envs)
    obs, _ = envs.reset()
    returns = torch.zeros(envs.num_envs, device=envs.device)
    lengths = torch.zeros(envs.num_envs, dtype=torch.long, device=envs.device)
    running = torch.ones(envs.num_envs, dtype=torch.bool, device=envs.device)
    while bool(running[:count].any()):
        with torch.no_grad():
            actions, _ = policy.sample(obs_rms(obs), deterministic=True)
        obs, rewards, dones, _ = envs.step(actions)
        returns += rewards * running
        lengths += running
        running &= ~dones
    return returns[:count].tolist(), lengths[:count].tolist()


# ================================================================ the environments (what differs from meow_continuous_action.py)
class IsaacGymEnv:
    """An IsaacGymEnvs VecTask seen through the interface the training loop uses.

    step(actions) -> (obs, rewards, dones, time_outs), tensors on the device. An env whose `dones` is
    set returns that episode's last observation and restarts during the next step, so the transition
    of that next step is not a real one; `restart_step_counts` says whether that step's reward and
    length belong to the new episode.
    """

    restart_step_counts = True  # the restart step simulates: its reward and length go to the new episode, as skrl counts them

    def __init__(self, task, device):
        self.task = task
        self.device = device
        self.max_episode_length = getattr(task, "max_episode_length", None)
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

    The vector env autoresets in the next step (gymnasium's default): an env whose episode ended returns
    that episode's last observation, and in the next step it only resets, ignores its action and returns
    the new episode's first observation with reward 0. These are the Isaac semantics the training loop
    expects: that step is stored masked out, and every step of an episode, its first included, is
    acted on from its own observation and stored.
    """

    restart_step_counts = False  # a restart step is no step of any episode: EpisodeStatistics skips it

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
        obs, rewards, terminated, truncated, _ = self.envs.step(actions.cpu().numpy())
        # a time limit hit in a terminal state is a termination
        time_outs = truncated & ~terminated
        return self.tensor(obs), self.tensor(rewards), self.tensor(terminated | truncated, torch.bool), self.tensor(time_outs, torch.bool)

    def close(self):
        self.envs.close()


class EpisodeStatistics:
    """Episode returns and lengths summed on the device; read (one host copy) only when logging.

    Besides the episodes finished since the last log point, it keeps the returns of the last `window`
    finished episodes: their mean is the paper's Isaac Gym curve (the authors ran no separate evaluation).
    """

    def __init__(self, env, window=100):
        self.env = env
        self.num_envs, self.obs_dim, self.act_dim, self.device = env.num_envs, env.obs_dim, env.act_dim, env.device
        self.returns = torch.zeros(self.num_envs, device=self.device)
        self.lengths = torch.zeros(self.num_envs, device=self.device)
        self.finished = torch.zeros(3, device=self.device)  # episodes, sum of returns, sum of lengths
        self.window = window
        self.recent = torch.zeros(window + 1, device=self.device)  # a ring of returns; the extra slot takes the unfinished envs' writes
        self.recent_count = torch.zeros((), dtype=torch.long, device=self.device)  # finished episodes ever
        self.restarting = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def reset(self):
        self.returns.zero_()
        self.lengths.zero_()
        obs, self.restarting = self.env.reset()
        return obs, self.restarting

    def step(self, actions):
        obs, rewards, dones, time_outs = self.env.step(actions)
        self.returns += rewards
        self.lengths += 1 if self.env.restart_step_counts else (~self.restarting).float()
        self.restarting = dones
        ended = dones.float()
        self.finished += torch.stack([ended.sum(), (self.returns * ended).sum(), (self.lengths * ended).sum()])
        # the ended episodes take the next ring slots in env order, with no host sync to count them
        slots = (self.recent_count + torch.cumsum(dones.long(), 0) - 1) % self.window
        self.recent[torch.where(dones, slots, self.window)] = self.returns
        self.recent_count += dones.long().sum()
        self.returns *= 1 - ended
        self.lengths *= 1 - ended
        return obs, rewards, dones, time_outs

    def pop(self):
        """(episodes finished since the last pop, their mean return, their mean length, the mean return of
        the last `window` finished episodes: nan before the first)."""
        filled = self.recent_count.clamp(max=self.window)
        last = (self.recent[: self.window] * (torch.arange(self.window, device=self.device) < filled)).sum() / filled
        count, returns, lengths, last = torch.cat([self.finished, last[None]]).tolist()
        self.finished.zero_()
        return int(count), returns / max(count, 1), lengths / max(count, 1), last

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
    import gymnasium as gym

    try:
        envs = gym.make_vec(
            args.env_id,
            num_envs=num_envs,
            vectorization_mode="async" if args.async_envs else "sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP},
        )
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError("%s needs a missing dependency: %s" % (args.env_id, str(e).splitlines()[0]))
    if not isinstance(envs.single_action_space, gym.spaces.Box):
        envs.close()
        raise ConfigError("%s has a %s action space; MEow needs a continuous (Box) one" % (args.env_id, type(envs.single_action_space).__name__))
    # the flow's tanh emits actions in (-1, 1), as Isaac Gym tasks expect; map them onto the env's box
    # (bounds in the box's own dtype, so that gymnasium has no precision to warn about)
    unit = np.ones(envs.single_action_space.shape, dtype=envs.single_action_space.dtype)
    envs = gym.wrappers.vector.RescaleAction(envs, min_action=-unit, max_action=unit)
    return GymnasiumEnv(envs, device, seed)


class RunningMeanStd(nn.Module):
    """The running observation standardiser of the authors' Isaac runs (skrl's running standard scaler).

    Mean and unbiased variance merge batch by batch (Chan et al.'s parallel update) from a prior of mean 0,
    variance 1 and count 1; x -> (x - mean) / (std + 1e-8), clipped to +-5. The statistics take in only
    the minibatches of the updates (states, then next states); acting and evaluation read them.
    """

    def __init__(self, dim, clip=5.0, epsilon=1e-8):
        super().__init__()
        self.clip = clip
        self.epsilon = epsilon
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1.0, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x):
        x = x.to(torch.float64)
        n = x.shape[0]
        batch_mean, batch_var = x.mean(0), x.var(0)  # unbiased: a batch holds >= 2 rows (validate_args)
        delta = batch_mean - self.mean
        total = self.count + n
        self.var.copy_((self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total)
        self.mean.add_(delta * n / total)
        self.count.copy_(total)

    def forward(self, x):
        return ((x - self.mean) / (self.var.sqrt() + self.epsilon)).clamp(-self.clip, self.clip).to(x.dtype)


# ================================================================ the loop
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
    episode_length = getattr(envs.env, "max_episode_length", None)
    if args.env_backend == "isaacgym" and episode_length and args.eval_frequency // args.num_envs < episode_length:
        print("warning: --eval-frequency %d is %d vectorized steps, shorter than an episode (%d): each evaluation restarts "
              "the training envs, so training rarely sees the end of an episode" % (args.eval_frequency, args.eval_frequency // args.num_envs, episode_length))

    if ckpt is None:
        # the env id in full, as meow_continuous_action.py names its runs (run_seeds.py and plot.py read it)
        run_name = "%s__%s__%s__%d" % (args.task if args.env_backend == "isaacgym" else args.env_id, args.exp_name, args.seed, int(time.time()))
        run_dir = os.path.join("runs", run_name)
    else:
        run_dir = os.path.dirname(os.path.abspath(args.resume))
        run_name = os.path.basename(run_dir)
        print("resuming %s from step %d" % (run_name, start_iteration * args.num_envs))
    writer = make_writer(args, run_name, run_dir, start_iteration * args.num_envs if ckpt else None)

    seed_everything(args)
    n, obs_dim, act_dim = envs.num_envs, envs.obs_dim, envs.act_dim
    iterations = -(-args.total_timesteps // n)  # vectorized steps, rounded up
    # the whole run's updates decide, so that a resumed run takes the path the uninterrupted one took
    compile = compile_enabled(args, iterations - args.learning_starts)

    policy = FlowPolicy(obs_dim, act_dim, args.alpha, args.sigma_max, args.sigma_min).to(device)
    target_policy = FlowPolicy(obs_dim, act_dim, args.alpha, args.sigma_max, args.sigma_min).to(device)
    target_policy.load_state_dict(policy.state_dict())
    target_policy.requires_grad_(False)
    update, optimizer = make_update(policy, target_policy, args.learning_rate, args.gamma, args.tau, args.max_grad_norm, compile)
    def act(obs):
        """The actions, their log pi, and min_k V_k(s) for the value-bias measure: one call, compiled as one graph."""
        actions, log_prob = policy.sample(obs)
        return actions, log_prob, policy.value(obs).min(dim=1).values

    act = maybe_compile(act, compile, device, "the action sampling")
    obs_rms = RunningMeanStd(obs_dim).to(device)
    rb = ReplayBuffer(args.buffer_steps_per_env, n, obs_dim, act_dim, device)
    bias = ValueBias(n, args.alpha, args.gamma, device)

    last_return, last_eval, loss = float("nan"), float("nan"), None
    if ckpt is not None:
        policy.load_state_dict(ckpt["model"])
        target_policy.load_state_dict(ckpt["target"])
        optimizer.load_state_dict(ckpt["optimizer"])
        obs_rms.load_state_dict(ckpt["obs_rms"])
        if ckpt.get("buffer") is not None:
            rb.load_state_dict(ckpt.pop("buffer"))  # popped: the loaded copy would otherwise live as long as the run
        else:
            print("note: the checkpoint has no replay buffer (--save-buffer); updates wait for %d new vectorized steps" % args.learning_starts)
        set_rng_state(ckpt["rng"])
        last_return, last_eval = ckpt["last_return"], ckpt["last_eval"]
        bias.load_state_dict(ckpt.get("value_bias", bias.state_dict()))  # absent from checkpoints before the measure

    def model_state():
        return {"model": policy.state_dict(), "obs_rms": obs_rms.state_dict(), "args": asdict(args), "obs_dim": obs_dim, "act_dim": act_dim}

    obs, dones = envs.reset()
    rate = RecentRate(start_iteration * n)
    stop = StopSignal(args.save_model)
    # the first vectorized step with a non-finite observation, reward and action (-1: none), kept on the device (no host sync per step)
    first_not_finite = torch.full((3,), -1, dtype=torch.long, device=device)

    def checked(scalars, step):
        """read_and_check, after which the first non-finite observation, reward or action stops the run: read
        here, at log points and before any file is saved, so that no checkpoint holds them in its buffer."""
        bad_obs, bad_reward, bad_action = first_not_finite.tolist()
        envs_fault = [(at, what) for at, what in ((bad_obs, "an observation"), (bad_reward, "a reward")) if at >= 0 and not 0 <= bad_action <= at]
        if envs_fault:  # the envs' fault, not a policy's NaN action stepped
            at, what = min(envs_fault)
            stop_on_bad_input(what + " of the envs", (at + 1) * n, writer)
        scalars = read_and_check(scalars, policy, step, args, writer)
        if bad_action >= 0:
            stop_on_bad_input("an action of the policy", bad_action * n, writer)
        return scalars

    for iteration in range(start_iteration, iterations):
        if iteration < args.learning_starts:
            actions = torch.rand(n, act_dim, device=device) * 2 - 1
            bias.act_randomly()
        else:
            policy_obs = obs_rms(obs)
            with torch.no_grad():
                actions, log_prob, value = act(policy_obs)
            bias.act(log_prob, value)
        valid = ~dones  # an env that ended its episode restarts in this step: no transition
        obs, dones, rewards, cut = step_and_store(envs, rb, obs, dones, actions, args.timeouts == "bootstrap")
        bias.step(rewards, dones, valid, bias.tail_value(target_policy, obs_rms(obs)) * cut if args.timeouts == "bootstrap" else None)
        bad = torch.stack([~obs.isfinite().all(), ~rewards.isfinite().all(), ~actions.isfinite().all()])
        first_not_finite = torch.where(bad & (first_not_finite < 0), iteration, first_not_finite)

        prev_step, step = iteration * n, min((iteration + 1) * n, args.total_timesteps)
        # one gradient step per vectorized step (the paper's Isaac Gym setting); a buffer restored empty
        # refills for learning_starts steps first, so that it holds real transitions to sample
        if iteration >= args.learning_starts and rb.size > args.learning_starts * n:
            first = loss is None
            batch = rb.sample(args.batch_size)
            # the authors' order: the statistics take in the states, which are then standardised, then the next states
            obs_rms.update(batch.obs)
            batch = batch._replace(obs=obs_rms(batch.obs))
            obs_rms.update(batch.next_obs)
            loss = update(batch._replace(next_obs=obs_rms(batch.next_obs)))
            if first:  # time it from here: the random-action phase and the compilation say nothing of the rest
                rate.restart(step)

        if crossed(prev_step, step, args.eval_frequency):
            read_and_check({}, policy, step, args, writer)  # never evaluate non-finite weights
            returns, _ = evaluate(policy, obs_rms, eval_envs, args.eval_episodes)
            last_eval = float(np.mean(returns))
            writer.add_scalar("eval/return", last_eval, step)
            if eval_envs is envs.env and step < args.total_timesteps:
                obs, dones = envs.reset()  # training resumes on new episodes, none of them partly deterministic
        if crossed(prev_step, step, args.log_frequency) or step == args.total_timesteps:
            scalars = {"losses/qf_loss": loss} if loss is not None else {}
            if loss is not None:
                batch = rb.sample(args.batch_size)
                scalars.update(diagnostics(policy, batch._replace(obs=obs_rms(batch.obs))))
            scalars.update(bias.pop())
            scalars = bias.review(checked(scalars, step), step)
            sps = rate.add(step)
            if math.isfinite(sps):  # not when the first update falls on this log point: the rate restarts there
                scalars["charts/SPS"] = sps
            episodes, mean_return, mean_length, last_100 = envs.pop()
            if episodes:
                last_return = mean_return
                scalars.update({"charts/episodic_return": mean_return, "charts/episodic_length": mean_length,
                                "charts/episodic_return_last100": last_100})
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)
            print(
                "step %d/%d (vectorized %d/%d) | SPS %s | return %s | last 100 %s | eval %s | entropy %s | ETA %s"
                % (step, args.total_timesteps, iteration + 1, iterations, shown(sps, "%.0f"), shown(last_return, "%.1f"), shown(last_100, "%.1f"), shown(last_eval, "%.1f"),
                   shown(scalars.get("charts/entropy", float("nan")), "%.2f"),
                   format_eta((args.total_timesteps - step) / sps) if loss is not None else "after learning starts")
            )
        if args.save_model and (crossed(prev_step, step, args.checkpoint_frequency) or stop.signum) and step < args.total_timesteps:
            checked({}, step)  # never save non-finite weights, or a buffer with non-finite observations
            # built in the call, so that its copy of the buffer is freed once written
            save_checkpoint(os.path.join(run_dir, "checkpoint.pt"), dict(
                model_state(),
                iteration=iteration + 1, step=step, target=target_policy.state_dict(), optimizer=optimizer.state_dict(),
                buffer=rb.state_dict() if args.save_buffer else None, rng=rng_state(), last_return=last_return, last_eval=last_eval,
                value_bias=bias.state_dict(),
            ))
            if stop.signum:
                stop.exit(os.path.join(run_dir, "checkpoint.pt"), step, writer)

    if args.save_model:
        checked({}, args.total_timesteps)
        path = os.path.join(run_dir, "%s.pt" % args.exp_name)
        save_checkpoint(path, dict(model_state(), step=args.total_timesteps))
        print("model saved to %s" % path)
    envs.close()
    if eval_envs is not envs.env:
        eval_envs.close()
    close_writer(writer)


# ================================================================ support code (not the method)
# Flag checks, the env's own checks, checkpoints, console output; what both scripts need is in the
# shared support block below, the same text as in meow_continuous_action.py.


def task_name(args):
    return args.task if args.env_backend == "isaacgym" else args.env_id.split("-v")[0]


def resolve_defaults(args):
    """Fill every setting left as None with the paper's value for the task (its Isaac Gym table; the Ant
    row for a task not in it). A gymnasium id takes the row of its task name: this script's regime (N
    envs, one update per vectorized step, standardised observations) is the one those rows were tuned
    in, where meow_continuous_action.py's MuJoCo rows belong to one env and one update per env step.
    Returns one line naming the row and the values it gave, or None when none was needed."""
    name = task_name(args)
    row = "the paper's %s row (Isaac Gym table)" % name
    if name not in PAPER_DEFAULTS:
        row = "no paper row for %s: the Ant row (Isaac Gym table)" % name
        name = "Ant"
    on_gymnasium = args.env_backend == "gymnasium"
    defaults = dict(PAPER_DEFAULTS[name], max_grad_norm=PAPER_MAX_GRAD_NORM, timeouts="bootstrap" if on_gymnasium else "terminal")
    updates = defaults.pop("updates")
    if on_gymnasium:
        defaults["num_envs"] = GYMNASIUM_NUM_ENVS
    taken = []
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
            taken.append("%s=%s" % (key, value))
    if args.total_timesteps is None:
        if on_gymnasium:
            args.total_timesteps = GYMNASIUM_TOTAL_TIMESTEPS
            taken.append("total_timesteps=%d (the gymnasium backend's CPU-sized run, not the paper's)" % args.total_timesteps)
        else:
            args.total_timesteps = updates * args.num_envs
            taken.append("total_timesteps=%d (%d vectorized steps x %d envs)" % (args.total_timesteps, updates, args.num_envs))
    if args.eval_frequency is None:
        # on Isaac Gym an evaluation restarts the training envs: once, at the end
        args.eval_frequency = GYMNASIUM_EVAL_FREQUENCY if on_gymnasium else args.total_timesteps
        taken.append("eval_frequency=%d" % args.eval_frequency)
    return "defaults: %s: %s" % (row, ", ".join(taken)) if taken else None


def validate_args(args):
    """Raise ConfigError for settings that cannot train."""
    validate_algorithm_args(args)
    if min(args.num_envs, args.buffer_steps_per_env, args.total_timesteps) < 1:
        raise ConfigError("--num-envs, --buffer-steps-per-env and --total-timesteps must be >= 1")
    if args.batch_size < 2:
        raise ConfigError("--batch-size must be >= 2: the observation statistics take the unbiased variance of each batch")
    if args.learning_starts < 1:
        raise ConfigError("--learning-starts must be >= 1 (got %d)" % args.learning_starts)
    if args.learning_starts >= args.buffer_steps_per_env:
        raise ConfigError("--learning-starts (%d) must be < --buffer-steps-per-env (%d)" % (args.learning_starts, args.buffer_steps_per_env))
    iterations = -(-args.total_timesteps // args.num_envs)
    if iterations <= args.learning_starts:
        raise ConfigError("--total-timesteps (%d) is %d vectorized steps of %d envs, which does not pass --learning-starts (%d vectorized steps): "
                          "the run would never update" % (args.total_timesteps, iterations, args.num_envs, args.learning_starts))
    if args.buffer_steps_per_env * args.num_envs > 2**24:
        raise ConfigError("a replay memory of %d steps x %d envs exceeds 2^24 rows, the most torch.multinomial samples from on a GPU; lower --buffer-steps-per-env" % (args.buffer_steps_per_env, args.num_envs))
    if min(args.eval_frequency, args.eval_episodes, args.log_frequency, args.checkpoint_frequency) < 1:
        raise ConfigError("--eval-frequency, --eval-episodes, --log-frequency and --checkpoint-frequency must be >= 1")


def check_backend(args):
    """The backend's own input: devices and packages for isaacgym, the env id for gymnasium."""
    if args.env_backend == "gymnasium":
        try:
            import gymnasium as gym
        except ImportError:
            raise ConfigError("the gymnasium backend needs gymnasium: pip install 'gymnasium[mujoco]'")
        if args.env_id not in gym.registry:
            raise ConfigError("unknown env id %r: not registered in gymnasium (e.g. Ant-v4, Humanoid-v4)" % args.env_id)
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


def training_device(args):
    if args.env_backend == "isaacgym":
        return torch.device(args.rl_device)
    return torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")


def crossed(prev_step, step, frequency):
    """True when a multiple of `frequency` lies in (prev_step, step]: a vectorized step adds num_envs steps."""
    return step // frequency > prev_step // frequency


# ---------------------------------------------------------------- shared support (the same text in meow_continuous_action.py)
# Bad input
class ConfigError(ValueError):
    """Bad user input: reported as one line on stderr, before anything is written."""


def fail(message, code=2):
    print("error: %s" % message, file=sys.stderr)
    sys.exit(code)


def validate_algorithm_args(args):
    """Raise ConfigError for hyper-parameters of the MEow update that cannot train."""
    for field in fields(args):
        value = getattr(args, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError("--%s must be a finite number (got %s)" % (field.name.replace("_", "-"), value))
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
    if args.torch_threads is not None and args.torch_threads < 1:
        raise ConfigError("--torch-threads must be >= 1")


# The update's speed devices
def flatten_parameters(module):
    """Move every parameter of `module`, and its gradient, into one flat tensor; return that tensor.

    Speed, not the method: each parameter becomes a view of the flat tensor (and its .grad a view of
    the flat gradient), so Adam, the gradient clip, zeroing and the Polyak average each run once over
    one buffer instead of once per tensor (docs/performance.md measures the gain). Call it after the
    module is on its device; the gradient is zeroed in place from then on, never set to None.
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


def make_optimizer(params, lr):
    """Adam, fused (one kernel for all parameters) where this torch supports it, else foreach."""
    params = list(params)
    for kwargs in (dict(fused=True), dict(foreach=True), {}):
        try:
            return torch.optim.Adam(params, lr=lr, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            continue


# Threads and compiling
MAX_DEFAULT_THREADS = 2  # the update's matrices are small: more threads do not make it faster (docs/performance.md)
COMPILE_MIN_UPDATES = 20_000  # below this, compiling costs more time than it saves (docs/performance.md)


def default_threads():
    """$OMP_NUM_THREADS when set (run_seeds.py sets 1 per job), else the cores this process may use, at most MAX_DEFAULT_THREADS."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_DEFAULT_THREADS))


def seed_everything(args):
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads or default_threads())


def compile_enabled(args, updates):
    """--compile (the default) in a run long enough to earn the compile time back."""
    return args.compile and updates >= COMPILE_MIN_UPDATES and hasattr(torch, "compile")


def maybe_compile(fn, enabled, device, what):
    """torch.compile(fn) when enabled, else fn itself (eager).

    Compiling happens at the first call, which prints one line first. If the backend is unavailable
    (at wrapping) or compiling fails (an exception in the first call, e.g. no C++ compiler), a one-line
    warning says so and fn runs eagerly from then on; an error in any later call propagates.
    """
    if not enabled:
        return fn

    def eager(reason):
        print("warning: %s; running %s eagerly" % (reason, what), file=sys.stderr)
        return fn

    try:
        if torch.device(device).type == "cpu":
            import torch._inductor.config as inductor_config

            # random draws in compiled code (the action noise) come from ATen's generator, as in eager mode
            inductor_config.fallback_random = True
        compiled = torch.compile(fn, dynamic=False)
    except Exception as e:  # the backend is unavailable on this platform
        return eager("torch.compile unavailable (%s)" % str(e).strip().splitlines()[0])
    current, first = compiled, True

    def call(*args, **kwargs):
        nonlocal current, first
        if not first:
            return current(*args, **kwargs)
        first = False
        print("compiling %s (once per process: about a minute on a 2-core CPU, seconds when the compile cache holds "
              "these shapes; --no-compile skips it)" % what, flush=True)
        try:
            return compiled(*args, **kwargs)
        except Exception as e:
            current = eager("torch.compile failed (%s)" % str(e).strip().splitlines()[0])
            return fn(*args, **kwargs)

    return call


# The run's writer, divergence, console
def make_writer(args, run_name, run_dir, resumed_step):
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args), name=run_name, save_code=True)
    from torch.utils.tensorboard import SummaryWriter

    # hide what a killed run logged after its checkpoint (no duplicate points); what it logged at the
    # checkpoint's own step came before the checkpoint was taken, is not logged again, and stays
    writer = SummaryWriter(run_dir, purge_step=None if resumed_step is None else resumed_step + 1)
    if resumed_step is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join("|%s|%s|" % (k, v) for k, v in vars(args).items()))
    return writer


def close_writer(writer):
    """The end of a run, however it ends (finished, stopped by a signal, or stopped on an error): every
    such path closes its writer, so this is also where SIGTERM and SIGUSR1 get their handlers back."""
    writer.close()
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()
    StopSignal.restore()


def read_and_check(scalars, policy, step, args, writer):
    """Read the device tensors in `scalars` at once (one host sync) and stop the run if any of them, or any
    weight, is not finite: one error line, exit code 1, TensorBoard flushed, no model file written (the
    last checkpoint, written while the weights were finite, stays)."""
    finite = torch.stack([p.isfinite().all() for p in policy.parameters()]).all()
    names = list(scalars)
    values = torch.stack([finite.float()] + [scalars[name].float() for name in names]).tolist()
    bad = [name for name, value in zip(names, values[1:]) if not math.isfinite(value)]
    if values[0] != 1.0:
        bad.append("the network's weights")
    if bad:
        close_writer(writer)
        fail("training diverged at step %d (%s not finite); look at --learning-rate (%g) and --max-grad-norm (%g), --alpha (%g), "
             "--sigma-max/--sigma-min (%g/%g); no model file was written"
             % (step, ", ".join(bad), args.learning_rate, args.max_grad_norm, args.alpha, args.sigma_max, args.sigma_min), code=1)
    return dict(zip(names, values[1:]))


def stop_on_bad_input(what, step, writer, value=None):
    """A non-finite observation, reward or action: one error line (with the value, when given) and exit code 1."""
    close_writer(writer)
    detail = "" if value is None else " (%s)" % np.array2string(np.asarray(value), precision=3, threshold=8)
    fail("%s is not finite at step %d%s; no model file was written" % (what, step, detail), code=1)


class RecentRate:
    """Steps per second over the last `window` log intervals: an ETA from the current pace, not from an
    average that still holds the fast random-action phase. restart() forgets the past (phase changes)."""

    def __init__(self, step, window=5):
        self.points = deque(maxlen=window + 1)
        self.restart(step)

    def restart(self, step, now=None):
        self.points.clear()
        self.points.append((step, time.time() if now is None else now))

    def add(self, step, now=None):
        """Record a log point; returns the recent rate in steps per second."""
        self.points.append((step, time.time() if now is None else now))
        (s0, t0), (s1, t1) = self.points[0], self.points[-1]
        return (s1 - s0) / (t1 - t0) if s1 > s0 and t1 > t0 else float("nan")


def format_eta(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(max(seconds, 0))
    return "%dh%02dm%02ds" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def shown(value, spec):
    """A console value, or "-" while it is NaN: not measured yet (no episode, evaluation or update so far)."""
    return "-" if math.isnan(value) else spec % value


# The value bias: how far Q is from the returns the agent gets
VALUE_BIAS_BOUND = 10.0  # a normalised bias beyond +-10 (Q off by ten times the returns' scale) ...
VALUE_BIAS_LOG_POINTS = 3  # ... at this many measured log points in a row is out of bounds: one warning per run


class ValueBias:
    """The overestimation measure of TD3 and REDQ for MEow's soft Q, over the training episodes finished
    since the last log point: the network's Q_t = min_k Q_k(s_t, a_t), the value the target (E5) takes,
    against the discounted soft return collected from s_t in an episode of T steps,

      G_t = sum_{k>=t} gamma^(k-t) r_k - alpha sum_{k>t} gamma^(k-t) log pi(a_k|s_k)  [+ gamma^(T-t) min_k V_target,k(s_T)
            where a time-out cut the episode and its stored transition bootstraps, as E5 does].

    Q_t is read from the network that chose a_t, when it chose it: Q_k - V_k = alpha log pi (E3, E4), so
    Q_t = alpha log pi(a_t|s_t) + min_k V_k(s_t) with the log pi that acting computed (at the sampled z; the
    loss reads the stored action through TanhSquash.inverse's clamp, which differs where a component
    saturates). The normalised bias (mean Q - mean G) / mean S divides by S_t, which is G_t with every
    reward and entropy term taken by its size and no bootstrap: S_t bounds the size of G_t's reward and
    entropy part, equal to it when no term cancels another (REDQ divides by |mean G|), and is not near 0
    where rewards and entropy cancel in G. An episode with random warm-up actions (no log pi) is not
    measured.

    Running sums per env replace stored episodes: with w_k = 1 + gamma + ... + gamma^k, sum over t of G_t
    is sum_k (w_k r_k - (w_k - 1) alpha log pi_k) + gamma w_(T-1) V_target(s_T). Nothing here draws a
    random number or waits for the device: pop() hands device tensors to the log point's one read.
    """

    def __init__(self, num_envs, alpha, gamma, device):
        self.alpha, self.gamma = alpha, gamma
        self.weight = torch.zeros(num_envs, dtype=torch.float64, device=device)  # w_k of each env's last step
        self.sums = torch.zeros(num_envs, 4, dtype=torch.float64, device=device)  # states, sums of Q_t, G_t, S_t
        self.alpha_log_prob, self.q = torch.zeros_like(self.weight), torch.zeros_like(self.weight)  # of the step being taken
        self.whole = torch.ones(num_envs, dtype=torch.bool, device=device)  # every action of the episode so far was the policy's
        self.finished = torch.zeros(5, dtype=torch.float64, device=device)  # episodes, states, sums of Q_t, G_t, S_t
        self.streak, self.warned = 0, False

    def act(self, log_prob, value):
        """The policy chose this step's actions with `log_prob`, in states whose min_k V_k(s) is `value`."""
        self.alpha_log_prob = self.alpha * log_prob.double()
        self.q = self.alpha_log_prob + value.double()

    def act_randomly(self):
        """A warm-up step of random actions: they have no log pi, so their episodes are not measured."""
        self.whole = torch.zeros_like(self.whole)

    def step(self, rewards, ended, valid=None, tail=None):
        """Add the step just taken. `ended`: it ends the env's episode (a bool, or a bool tensor per env);
        `valid`: False for an env stepping out of an ended episode (no transition; its sums start afresh);
        `tail`: min_k V_target,k(s_T) where a time-out cut the episode and E5 bootstraps, else 0."""
        ended = torch.as_tensor(ended, device=self.weight.device).expand(len(self.weight))
        weight, rewards = self.gamma * self.weight + 1, rewards.double()
        soft_return = weight * rewards - (weight - 1) * self.alpha_log_prob
        if tail is not None:
            soft_return = soft_return + self.gamma * weight * tail.double()
        size = weight * rewards.abs() + (weight - 1) * self.alpha_log_prob.abs()
        sums = self.sums + torch.stack([torch.ones_like(weight), self.q, soft_return, size], dim=1)
        if valid is not None:
            ended, sums, weight, self.whole = ended & valid, sums * valid[:, None], weight * valid, self.whole | ~valid
        counted = (ended & self.whole).double()
        self.finished = self.finished + torch.cat([counted.sum()[None], counted @ sums])
        kept = 1.0 - ended.double()
        self.sums, self.weight, self.whole = sums * kept[:, None], weight * kept, self.whole | ended

    @staticmethod
    def tail_value(target_policy, next_obs):
        """min_k V_target,k(s_T) (E4), from which E5 bootstraps a time-out: where the soft return goes on."""
        with torch.no_grad():
            return target_policy.value(next_obs).min(dim=1).values

    def pop(self):
        """Device scalars for the log point's read: the episodes measured since the last pop and, over their
        states, the mean Q, the mean G and the normalised bias (all 0 when none was measured)."""
        episodes, states, q, g, size = self.finished.unbind()
        self.finished = torch.zeros_like(self.finished)
        states = states.clamp(min=1)
        q, g, size = q / states, g / states, size / states
        # size is 0 only if the episodes were of one step each with reward 0
        return {"bias/episodes": episodes, "bias/q_value": q, "bias/soft_return": g, "bias/normalised": (q - g) / size.clamp(min=1e-8)}

    def review(self, values, step):
        """After the read: drop the episode count, and the bias tags when no episode was measured; warn once
        per run (one `warning:` line, the run goes on) when the normalised bias has stayed beyond
        +-VALUE_BIAS_BOUND at VALUE_BIAS_LOG_POINTS measured log points in a row. Returns `values`."""
        episodes = values.pop("bias/episodes")
        if not episodes:
            for tag in ("bias/q_value", "bias/soft_return", "bias/normalised"):
                del values[tag]
            return values
        self.streak = self.streak + 1 if abs(values["bias/normalised"]) > VALUE_BIAS_BOUND else 0
        if self.streak >= VALUE_BIAS_LOG_POINTS and not self.warned:
            self.warned = True
            print("warning: Q has run away from the returns at step %d: mean Q %.4g against a mean soft return of %.4g over the "
                  "last %d episodes, a normalised bias of %.3g, beyond +-%g at %d log points in a row (tags bias/*); the run goes on"
                  % (step, values["bias/q_value"], values["bias/soft_return"], episodes, values["bias/normalised"], VALUE_BIAS_BOUND,
                     self.streak), file=sys.stderr, flush=True)
        return values

    def state_dict(self):
        """For checkpoints: the warning's state and the episodes finished since the last log point (a run resumed
        from a checkpoint between two log points logs at the next one what the uninterrupted run logs)."""
        return {"streak": self.streak, "warned": self.warned, "finished": self.finished}

    def load_state_dict(self, state):
        self.streak, self.warned = state["streak"], state["warned"]
        if "finished" in state:  # absent from checkpoints of earlier versions
            self.finished = state["finished"].to(self.finished)


# Checkpoints and RNG state
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
    """torch.save through a temporary file, so that a run killed while saving leaves no half-written
    checkpoint or model in `path` (a previous checkpoint stays; run_seeds.py --resume counts a model file as a finished run)."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


class StopSignal:
    """With --save-model, SIGTERM or SIGUSR1 (a cluster's pre-emption, or its warning before the time
    limit) does not end the run at once: the loop writes a checkpoint at its next chance and exits with
    128 + the signal's number, so that the same run goes on with --resume. Without --save-model there is
    nothing to keep and the signals keep their default action."""

    previous = {}  # the handlers before the run's, given back when it ends (main() may run again in this process)

    def __init__(self, enabled):
        self.signum = None
        for signum in (signal.SIGTERM, signal.SIGUSR1) if enabled else ():
            StopSignal.previous.setdefault(signum, signal.signal(signum, self.catch))

    def catch(self, signum, frame):
        self.signum = signum

    @staticmethod
    def restore():
        while StopSignal.previous:
            signal.signal(*StopSignal.previous.popitem())

    def exit(self, path, step, writer):
        print("%s: checkpoint at step %d written to %s; stopping (continue with --resume %s)" % (signal.Signals(self.signum).name, step, path, path), flush=True)
        close_writer(writer)
        sys.exit(128 + self.signum)


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


def check_resumable(ckpt, path):
    """Raise ConfigError unless `ckpt` is a training checkpoint this version can continue."""
    if "optimizer" not in ckpt or "step" not in ckpt:
        raise ConfigError("%s is a saved model, not a checkpoint.pt to resume (--eval-checkpoint evaluates it)" % path)
    if [len(group["params"]) for group in ckpt["optimizer"]["param_groups"]] != [1]:
        raise ConfigError("%s holds one Adam state per tensor, not one for the flat parameter buffer: this version "
                          "cannot resume it (--eval-checkpoint still evaluates it)" % path)


def saved_args(saved, path, needed=None):
    """The Args a model or checkpoint was saved with. needed=None (to resume): the saved fields must be
    exactly today's; else only the fields named in `needed` are read, and the others keep their defaults."""
    known = [f.name for f in fields(Args)]
    if needed is None:
        unknown, missing = [k for k in saved if k not in known], [k for k in known if k not in saved]
        if unknown or missing:
            raise ConfigError("%s was saved by another version of this script (unknown args: %s; missing args: %s)"
                              % (path, ", ".join(unknown) or "none", ", ".join(missing) or "none"))
        return Args(**saved)
    missing = [k for k in needed if k not in saved]
    if missing:
        raise ConfigError("%s lacks the saved args %s" % (path, ", ".join(missing)))
    args = Args()
    for k in needed:
        setattr(args, k, saved[k])
    return args


def resumed_args(args, ckpt):
    """--resume: the checkpoint's args, except this process's MACHINE_FLAGS and an explicit
    --total-timesteps (which extends the run, so it must pass the checkpoint's step)."""
    resumed = saved_args(ckpt["args"], args.resume)
    for flag in MACHINE_FLAGS:
        setattr(resumed, flag, getattr(args, flag))
    if args.total_timesteps is not None:
        if args.total_timesteps <= ckpt["step"]:
            raise ConfigError("--total-timesteps (%d) must be above the checkpoint's step (%d) to resume %s"
                              % (args.total_timesteps, ckpt["step"], args.resume))
        resumed.total_timesteps = args.total_timesteps
    resumed.resume = args.resume
    return resumed


# ---------------------------------------------------------------- end of the shared support


# flags of this process and machine, not of the run: --resume and --eval-checkpoint take them from the command line
MACHINE_FLAGS = ("sim_device", "rl_device", "graphics_device_id", "headless", "cuda", "async_envs", "torch_threads", "compile",
                 "track", "wandb_project_name", "wandb_entity")


def check_isaac_file(ckpt, path):
    if "obs_rms" not in ckpt:
        raise ConfigError("%s has no observation normaliser: not a meow_isaacgym.py model or checkpoint" % path)


def resume_args(args):
    ckpt = load_checkpoint(args.resume)
    check_isaac_file(ckpt, args.resume)
    check_resumable(ckpt, args.resume)
    resumed = resumed_args(args, ckpt)
    saved = ckpt["args"]
    if saved["env_backend"] == "isaacgym" and saved["eval_frequency"] == saved["total_timesteps"]:
        resumed.eval_frequency = resumed.total_timesteps  # a run that evaluates once, at its end, still does when extended
    return resumed, ckpt


def evaluate_checkpoint(args):
    """--eval-checkpoint: the saved deterministic policy on its own backend and task."""
    if args.eval_episodes < 1:
        raise ConfigError("--eval-episodes must be >= 1")
    ckpt = load_checkpoint(args.eval_checkpoint)
    check_isaac_file(ckpt, args.eval_checkpoint)
    saved = saved_args(ckpt["args"], args.eval_checkpoint, needed=("env_backend", "task", "env_id", "alpha", "sigma_max", "sigma_min"))
    for flag in MACHINE_FLAGS:
        setattr(saved, flag, getattr(args, flag))
    check_backend(saved)
    device = training_device(saved)
    envs = make_env(saved, args.eval_episodes, args.seed, device)
    if (envs.obs_dim, envs.act_dim) != (ckpt["obs_dim"], ckpt["act_dim"]):
        envs.close()
        raise ConfigError("%s has observation/action sizes %d/%d, the model %d/%d" % (task_name(saved), envs.obs_dim, envs.act_dim, ckpt["obs_dim"], ckpt["act_dim"]))
    policy = FlowPolicy(ckpt["obs_dim"], ckpt["act_dim"], saved.alpha, saved.sigma_max, saved.sigma_min).to(device)
    policy.load_state_dict(ckpt["model"])
    obs_rms = RunningMeanStd(ckpt["obs_dim"]).to(device)
    obs_rms.load_state_dict(ckpt["obs_rms"])
    returns, lengths = evaluate(policy, obs_rms, envs, args.eval_episodes)
    envs.close()
    steps = "%d steps" % lengths[0] if min(lengths) == max(lengths) else "%d-%d steps" % (min(lengths), max(lengths))
    print("%s: eval return %.2f +- %.2f over %d episodes of %s (deterministic policy)"
          % (task_name(saved), np.mean(returns), np.std(returns), len(returns), steps))
    return returns


if __name__ == "__main__":
    main(tyro.cli(Args))
