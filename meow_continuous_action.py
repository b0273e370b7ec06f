"""MEow: Maximum-Entropy RL via an Energy-Based Normalizing Flow (Chao et al., NeurIPS 2024,
arXiv 2405.13629), for continuous-action gymnasium tasks (MuJoCo).

One conditional normalizing flow is both the policy and the critic. Read as an energy-based model,
its unnormalised log-density is the soft Q-function and its state-only normaliser is the soft value,
so V is exact (no Monte Carlo) and one regression trains policy and critic at once. The equations,
named where the code computes them:

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

Run: python meow_continuous_action.py --env-id Hopper-v4
The file reads top to bottom as the method: arguments, the env, the network, the target and loss,
the update, the replay buffer, the loop. Support code that is not the method (flag checks, threads
and compiling, checkpoints, console) follows the loop in its own section.
"""
import contextlib
import math
import os
import random
import signal
import sys
import time
from collections import deque, namedtuple
from dataclasses import asdict, dataclass, fields
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
    capture_video: bool = False
    """if toggled, record the first episode of each evaluation to runs/{run_name}/videos/step-{step}.mp4 (headless machines render with EGL)"""
    save_model: bool = False
    """if toggled, save the weights and args to runs/{run_name}/{exp_name}.pt at the end, and resumable checkpoints on the way"""
    checkpoint_frequency: int = 100_000
    """with --save-model, write runs/{run_name}/checkpoint.pt at the first episode end after every this many steps (and after SIGTERM or SIGUSR1, then stop)"""
    save_buffer: bool = False
    """include the replay buffer in checkpoints (large) so that a resumed run continues exactly"""
    resume: Optional[str] = None
    """path of a checkpoint.pt to continue from, in its run directory: the run's args come from the checkpoint, the machine flags (cuda, torch-threads, compile, track, wandb-*, capture-video) from this command line, and --total-timesteps may extend the run"""
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
    """read losses and diagnostics from the device, check them, and log them (TensorBoard and console) every this many steps"""


# The paper's per-environment hyper-parameters (its Table of MuJoCo settings):
# alpha, tau, sigma_max, sigma_min, learning_starts, total_timesteps.
PAPER_DEFAULTS = {
    "Hopper": dict(alpha=0.25, tau=0.005, sigma_max=-0.3, sigma_min=-5.0, learning_starts=5_000, total_timesteps=1_500_000),
    "HalfCheetah": dict(alpha=0.25, tau=0.003, sigma_max=2.0, sigma_min=-5.0, learning_starts=10_000, total_timesteps=1_500_000),
    "Walker2d": dict(alpha=0.1, tau=0.005, sigma_max=-0.3, sigma_min=-5.0, learning_starts=10_000, total_timesteps=4_000_000),
    "Ant": dict(alpha=0.05, tau=0.0001, sigma_max=-0.3, sigma_min=-5.0, learning_starts=5_000, total_timesteps=4_000_000),
    "Humanoid": dict(alpha=0.125, tau=0.0005, sigma_max=-0.3, sigma_min=-5.0, learning_starts=5_000, total_timesteps=5_000_000),
}


def rendering_kwargs(env_id):
    """gymnasium's MuJoCo tasks render from a camera that stays put, which a running agent leaves within a
    second; their models' own "track" camera follows the agent's centre of mass."""
    entry_point = gym.spec(env_id).entry_point
    if isinstance(entry_point, str) and entry_point.startswith("gymnasium.envs.mujoco"):
        return dict(render_mode="rgb_array", camera_name="track")
    return dict(render_mode="rgb_array")


def make_env(env_id, seed, render=False):
    """A thunk that builds one env with actions rescaled to [-1, 1] and episode statistics."""

    def thunk():
        try:
            env = gym.make(env_id, **rendering_kwargs(env_id)) if render else gym.make(env_id)
        except gym.error.DependencyNotInstalled as e:
            raise ConfigError("%s needs a missing dependency: %s" % (env_id, str(e).splitlines()[0]))
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ConfigError("%s has a %s action space; MEow needs a continuous (Box) one" % (env_id, type(env.action_space).__name__))
        env = gym.wrappers.RecordEpisodeStatistics(env)
        # the flow's tanh emits actions in (-1, 1); the wrapper maps them onto the env's box (bounds in
        # the box's own dtype, so that gymnasium has no precision to warn about)
        unit = np.ones(env.action_space.shape, dtype=env.action_space.dtype)
        env = gym.wrappers.RescaleAction(env, min_action=-unit, max_action=unit)
        env.action_space.seed(seed)
        return env

    return thunk


# ================================================================ the method (the same text in meow_isaacgym.py)
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
    """A ring buffer of transitions on the training device.

    All fields live side by side in one [capacity, width] tensor so that a minibatch is one gather.
    """

    def __init__(self, capacity, obs_dim, act_dim, device):
        self.widths = [obs_dim, act_dim, 1, obs_dim, 1]
        self.data = torch.zeros(capacity, sum(self.widths), device=device)
        self.capacity = capacity
        self.pos = 0
        self.size = 0

    def add(self, obs, actions, rewards, next_obs, terminated):
        """Store a batch of N transitions (N = 1 in this script)."""
        rows = torch.cat([obs, actions, rewards[:, None], next_obs, terminated[:, None]], dim=1).to(self.data)
        n = rows.shape[0]
        if n > self.capacity:
            raise ValueError("cannot add %d transitions to a buffer of capacity %d" % (n, self.capacity))
        first = min(n, self.capacity - self.pos)
        self.data[self.pos : self.pos + first] = rows[:first]
        self.data[: n - first] = rows[first:]  # wrap around
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size):
        idx = torch.randint(0, self.size, (batch_size,), device=self.data.device)
        obs, actions, rewards, next_obs, terminated = torch.split(self.data[idx], self.widths, dim=1)
        return Batch(obs, actions, rewards[:, 0], next_obs, terminated[:, 0])

    def state_dict(self):
        return {"data": self.data[: self.size].clone(), "pos": self.pos, "size": self.size}

    def load_state_dict(self, state):
        self.size, self.pos = state["size"], state["pos"]
        self.data[: self.size] = state["data"].to(self.data)


def evaluate(policy, env, episodes, device, video_path=None):
    """Returns and lengths (steps) of the deterministic policy's episodes (prior mean pushed through the flow).
    With `video_path`, the first episode's frames are written there (.mp4 or .gif)."""
    returns, lengths, frames = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset()
        done, total, length = False, 0.0, 0
        while not done:
            if video_path and episode == 0:
                frames.append(env.render())
            with torch.no_grad():
                action, _ = policy.sample(torch.as_tensor(obs, dtype=torch.float32, device=device)[None], deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action[0].cpu().numpy())
            total += float(reward)
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
    if video_path:
        write_video(video_path, frames, env.metadata.get("render_fps", 30))
    return returns, lengths


def as_batch(*arrays, device):
    """numpy values of one env step -> float32 tensors with a leading batch dim of 1."""
    return [torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)[None] for x in arrays]


# ================================================================ the loop
def main(args):
    try:
        if args.eval_checkpoint:
            return evaluate_checkpoint(args)
        ckpt = None
        if args.resume:
            args, ckpt = resume_args(args)
        note = resolve_defaults(args)
        validate_args(args)
        check_env_id(args.env_id)
        check_extras(args)
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
    writer = make_writer(args, run_name, run_dir, start_step if ckpt else None)

    seed_everything(args)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    # the whole run's updates decide, so that a resumed run takes the path the uninterrupted one took
    compile = compile_enabled(args, args.total_timesteps - args.learning_starts)

    eval_env = make_env(args.env_id, args.seed + 10_000, args.capture_video)()
    eval_env.reset(seed=args.seed + 10_000)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]

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
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)
    bias = ValueBias(1, args.alpha, args.gamma, device)

    obs, _ = env.reset(seed=args.seed)
    last_return, last_eval, loss = float("nan"), float("nan"), None
    if ckpt is not None:
        policy.load_state_dict(ckpt["model"])
        target_policy.load_state_dict(ckpt["target"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("buffer") is not None:
            rb.load_state_dict(ckpt.pop("buffer"))  # popped: the loaded copy would otherwise live as long as the run
        else:
            print("note: the checkpoint has no replay buffer (--save-buffer); updates wait until it holds a batch")
        set_rng_state(ckpt["rng"])
        set_env_rng_state(env, ckpt["env_rng"])
        set_env_rng_state(eval_env, ckpt["eval_env_rng"])
        last_return, last_eval = ckpt["last_return"], ckpt["last_eval"]
        bias.load_state_dict(ckpt.get("value_bias", bias.state_dict()))  # absent from checkpoints before the measure
        obs, _ = env.reset()  # the checkpoint was taken between two episodes
    next_checkpoint = (start_step // args.checkpoint_frequency + 1) * args.checkpoint_frequency
    rate = RecentRate(start_step)
    stop = StopSignal(args.save_model)

    for global_step in range(start_step, args.total_timesteps):
        if global_step < args.learning_starts:
            action = env.action_space.sample()
            bias.act_randomly()
        else:
            policy_obs = torch.as_tensor(obs, dtype=torch.float32, device=device)[None]
            with torch.no_grad():
                action, log_prob, value = act(policy_obs)
            bias.act(log_prob, value)
            action = action[0].cpu().numpy()
            if not np.isfinite(action).all():  # on the host anyway: stop before the env sees it
                read_and_check({"losses/qf_loss": loss} if loss is not None else {}, policy, global_step, args, writer)
                stop_on_bad_input("the policy's action", global_step, writer, action)

        next_obs, reward, terminated, truncated, info = env.step(action)
        if not np.isfinite(next_obs).all():
            stop_on_bad_input("the environment's observation", global_step + 1, writer, next_obs)
        if not np.isfinite(reward):  # it would reach the loss at the next update, and read as a diverged run
            stop_on_bad_input("the environment's reward", global_step + 1, writer, reward)
        # next_obs is the true successor even at a time-out (a single env does not autoreset), so the
        # transition is stored as is: a time-out bootstraps from it, a termination does not (terminated=1)
        transition = as_batch(obs, action, reward, next_obs, terminated, device=device)
        rb.add(*transition)
        obs = next_obs
        episode_over = terminated or truncated
        bias.step(transition[2], episode_over, tail=bias.tail_value(target_policy, transition[3]) if truncated and not terminated else None)
        step = global_step + 1  # env steps taken: the x axis of every tag
        if episode_over:
            last_return = float(info["episode"]["r"])
            writer.add_scalar("charts/episodic_return", last_return, step)
            writer.add_scalar("charts/episodic_length", int(info["episode"]["l"]), step)

        if global_step >= args.learning_starts and rb.size >= args.batch_size:
            first = loss is None
            loss = update(rb.sample(args.batch_size))
            if first:  # time it from here: the random-action phase and the compilation say nothing of the rest
                rate.restart(step)

        if step % args.eval_frequency == 0:
            read_and_check({}, policy, step, args, writer)  # never evaluate (or film) non-finite weights
            video = os.path.join(run_dir, "videos", "step-%d.mp4" % step) if args.capture_video else None
            returns, _ = evaluate(policy, eval_env, args.eval_episodes, device, video)
            last_eval = float(np.mean(returns))
            writer.add_scalar("eval/return", last_eval, step)
        if step % args.log_frequency == 0 or step == args.total_timesteps:
            scalars = {"losses/qf_loss": loss} if loss is not None else {}
            if loss is not None:
                scalars.update(diagnostics(policy, rb.sample(args.batch_size)))
            scalars.update(bias.pop())
            scalars = bias.review(read_and_check(scalars, policy, step, args, writer), step)
            sps = rate.add(step)
            if math.isfinite(sps):  # not when the first update falls on this log point: the rate restarts there
                scalars["charts/SPS"] = sps
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)
            print(
                "step %d/%d | SPS %s | return %s | eval %s | entropy %s | ETA %s"
                % (step, args.total_timesteps, shown(sps, "%.0f"), shown(last_return, "%.1f"), shown(last_eval, "%.1f"), shown(scalars.get("charts/entropy", float("nan")), "%.2f"),
                   format_eta((args.total_timesteps - step) / sps) if loss is not None else "after learning starts")
            )

        if episode_over:
            # checkpoint between episodes: then the env's RNG state is all of its state we need
            if args.save_model and (step >= next_checkpoint or stop.signum) and step < args.total_timesteps:
                read_and_check({}, policy, step, args, writer)  # never save non-finite weights
                # built in the call, so that its copy of the buffer is freed once written
                save_checkpoint(os.path.join(run_dir, "checkpoint.pt"), dict(
                    model_state(policy, args, obs_dim, act_dim, step),
                    target=target_policy.state_dict(), optimizer=optimizer.state_dict(), buffer=rb.state_dict() if args.save_buffer else None,
                    rng=rng_state(), env_rng=env_rng_state(env), eval_env_rng=env_rng_state(eval_env), last_return=last_return, last_eval=last_eval,
                    value_bias=bias.state_dict(),
                ))
                next_checkpoint = (step // args.checkpoint_frequency + 1) * args.checkpoint_frequency
                if stop.signum:
                    stop.exit(os.path.join(run_dir, "checkpoint.pt"), step, writer)
            obs, _ = env.reset()

    if args.save_model:
        read_and_check({}, policy, args.total_timesteps, args, writer)
        path = os.path.join(run_dir, "%s.pt" % args.exp_name)
        save_checkpoint(path, model_state(policy, args, obs_dim, act_dim, args.total_timesteps))
        print("model saved to %s" % path)
    env.close()
    eval_env.close()
    close_writer(writer)


# ================================================================ support code (not the method)
# Flag checks, the env's own checks, checkpoints, console output; what both scripts need is in the
# shared support block below, the same text as in meow_isaacgym.py.


def resolve_defaults(args):
    """Fill every hyper-parameter left as None with the paper's value for the task (its MuJoCo table;
    the Hopper row for a task not in it). Returns one line naming the row and the values it gave, or
    None when every value came from the command line."""
    name = args.env_id.split("-v")[0]
    row = "the paper's %s row (MuJoCo table)" % name
    if name not in PAPER_DEFAULTS:
        name = "Hopper"
        row = "no paper row for %s: the Hopper row (MuJoCo table)" % args.env_id
    taken = [(key, value) for key, value in PAPER_DEFAULTS[name].items() if getattr(args, key) is None]
    for key, value in taken:
        setattr(args, key, value)
    return "defaults: %s: %s" % (row, ", ".join("%s=%s" % kv for kv in taken)) if taken else None


def validate_args(args):
    """Raise ConfigError for settings that cannot train."""
    validate_algorithm_args(args)
    if args.batch_size < 1 or args.buffer_size < 1:
        raise ConfigError("--batch-size and --buffer-size must be >= 1")
    if args.batch_size > args.buffer_size:
        raise ConfigError("--batch-size (%d) is larger than --buffer-size (%d)" % (args.batch_size, args.buffer_size))
    if args.total_timesteps < 1 or args.learning_starts < 0:
        raise ConfigError("--total-timesteps must be >= 1 and --learning-starts >= 0")
    first_update = max(args.learning_starts, args.batch_size - 1)  # the step at which the buffer first holds a batch
    if args.total_timesteps <= first_update:
        raise ConfigError("--total-timesteps (%d) does not pass --learning-starts (%d) and --batch-size (%d): the run would never update"
                          % (args.total_timesteps, args.learning_starts, args.batch_size))
    if min(args.eval_frequency, args.eval_episodes, args.log_frequency, args.checkpoint_frequency) < 1:
        raise ConfigError("--eval-frequency, --eval-episodes, --log-frequency and --checkpoint-frequency must be >= 1")


def check_env_id(env_id):
    if env_id not in gym.registry:
        raise ConfigError("unknown env id %r: not registered in gymnasium (e.g. Hopper-v4, HalfCheetah-v4, Ant-v5)" % env_id)


def check_extras(args):
    """Optional packages that some flags need, and a renderer for --capture-video."""
    if args.track:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("--track needs wandb: pip install wandb")
    if args.capture_video:
        check_rendering(args.env_id)


def check_rendering(env_id):
    """--capture-video: pick an offscreen MuJoCo backend on a machine without a display, and render one
    frame now, so that a missing renderer stops the run at its start, not at its first evaluation."""
    headless = sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
    if headless and "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"  # read when MuJoCo is first imported (just below); GLFW needs a display
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        import imageio.v2  # noqa: F401  (writes the frames)
        import imageio_ffmpeg  # noqa: F401  (its .mp4 encoder)
    except ImportError:
        raise ConfigError("--capture-video needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg")
    env = None
    try:
        env = make_env(env_id, 0, render=True)()
        env.reset(seed=0)
        frame = env.render()
    except ConfigError:
        raise
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError("--capture-video cannot render %s with MUJOCO_GL=%s (%s): install EGL (Debian: apt install libegl1) "
                          "or OSMesa and set MUJOCO_GL=egl or osmesa" % (env_id, os.environ.get("MUJOCO_GL", "glfw"), reason))
    finally:
        if env is not None:
            env.close()
    if frame is None:
        raise ConfigError("--capture-video: %s renders no frames" % env_id)


def write_video(path, frames, fps):
    import imageio.v2 as imageio

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".gif"):
        imageio.mimsave(path, frames, duration=1000.0 / fps, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps, macro_block_size=1)


# ---------------------------------------------------------------- shared support (the same text in meow_isaacgym.py)
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


def model_state(policy, args, obs_dim, act_dim, step):
    """What a saved model holds (a checkpoint adds the rest of the training state)."""
    return {"model": policy.state_dict(), "args": asdict(args), "obs_dim": obs_dim, "act_dim": act_dim, "step": step}


def env_rng_state(env):
    """RNG states of an env between episodes: its reset noise and its action space (random warm-up actions)."""
    return {"env": env.unwrapped.np_random.bit_generator.state, "action_space": env.action_space.np_random.bit_generator.state}


def set_env_rng_state(env, state):
    env.unwrapped.np_random.bit_generator.state = state["env"]
    env.action_space.np_random.bit_generator.state = state["action_space"]


# flags of this process and machine, not of the run: --resume takes them from the command line
MACHINE_FLAGS = ("cuda", "torch_threads", "compile", "track", "wandb_project_name", "wandb_entity", "capture_video")


def check_not_isaac_file(ckpt, path):
    """meow_isaacgym.py saves the same network, but its policy reads standardised observations."""
    if "obs_rms" in ckpt:
        raise ConfigError("%s is a meow_isaacgym.py model or checkpoint (its policy reads standardised observations): "
                          "evaluate or resume it with meow_isaacgym.py" % path)


def resume_args(args):
    ckpt = load_checkpoint(args.resume)
    check_not_isaac_file(ckpt, args.resume)
    check_resumable(ckpt, args.resume)
    return resumed_args(args, ckpt), ckpt


def load_policy(path, device="cpu"):
    """The policy of a saved model or checkpoint (its weights alone), the args it was saved with, and the file's dict."""
    ckpt = load_checkpoint(path)
    check_not_isaac_file(ckpt, path)
    saved = saved_args(ckpt["args"], path, needed=("env_id", "alpha", "sigma_max", "sigma_min"))
    policy = FlowPolicy(ckpt["obs_dim"], ckpt["act_dim"], saved.alpha, saved.sigma_max, saved.sigma_min).to(device)
    policy.load_state_dict(ckpt["model"])
    return policy, saved, ckpt


def evaluate_checkpoint(args):
    """--eval-checkpoint: the deterministic policy of a saved model, no training and no buffer."""
    if args.eval_episodes < 1:
        raise ConfigError("--eval-episodes must be >= 1")
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    policy, saved, ckpt = load_policy(args.eval_checkpoint, device)
    check_env_id(saved.env_id)
    args.env_id = saved.env_id
    check_extras(args)
    env = make_env(saved.env_id, args.seed, args.capture_video)()
    env.reset(seed=args.seed)
    video = os.path.join(os.path.dirname(os.path.abspath(args.eval_checkpoint)), "videos_eval", "eval.mp4") if args.capture_video else None
    returns, lengths = evaluate(policy, env, args.eval_episodes, device, video)
    env.close()
    trained = " after %d training steps" % ckpt["step"] if "step" in ckpt else ""
    steps = "%d steps" % lengths[0] if min(lengths) == max(lengths) else "%d-%d steps" % (min(lengths), max(lengths))
    print("%s: eval return %.2f +- %.2f over %d episodes of %s (deterministic policy%s)"
          % (saved.env_id, np.mean(returns), np.std(returns), len(returns), steps, trained))
    if video:
        print("video of the first episode: %s" % video)
    return returns


if __name__ == "__main__":
    main(tyro.cli(Args))
