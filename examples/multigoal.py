"""MEow on the multi-goal toy task: a flow policy that keeps several modes at once.

The task is the 2-D point mass of the soft Q-learning paper (Haarnoja et al., 2017): the agent
starts at the origin and four goals sit symmetrically around it. Every goal is equally good, so
the maximum-entropy optimal policy pi(a|s) ~ exp(Q(s, a) / alpha) is four-modal at the start.
MEow (Chao et al., NeurIPS 2024) reads its normalizing flow as an energy-based model whose energy
is the soft Q-function: Q(s, a) = alpha * log pi(a|s) + V(s), so whatever modes its Q has, its
policy has too. A tanh-Gaussian actor (SAC, `--baseline gaussian`) has one bump per state, however
many modes its critics find: it can only pick one direction or straddle several.

The script trains one of them, rolls out the stochastic policy 100 times from the start state,
prints which goals it reaches and draws the trajectories and the soft Q over the start state's
action plane into one figure. The defaults are the paper's toy-task hyper-parameters (alpha 2.5,
prior log-std in [-2, 1], gamma 0.9, tau 5e-4, batch 256) with a longer budget.
examples/multigoal_modes.py measures how far both policies are from the exact soft-optimal one.

Run (from anywhere): python examples/multigoal.py                 # MEow, writes docs/multigoal.png
                     python examples/multigoal.py --baseline gaussian --seeds 1 2 3
                     python examples/multigoal.py --script fork_affine.py    # a fork's network (ablations/README.md)
"""
import importlib.util
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

# the example lives one level below the MEow script it reuses
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")  # headless: the figure only ever goes to a file
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

from flow_layers import MLP, AdditiveCoupling, Dropout
import meow_continuous_action
from meow_continuous_action import ReplayBuffer, make_optimizer


@dataclass
class Args:
    seeds: Tuple[int, ...] = (1,)
    """seeds to train and evaluate, one run each (e.g. --seeds 1 2 3); the figure shows the first"""
    baseline: Literal["none", "gaussian"] = "none"
    """'none' trains MEow; 'gaussian' trains the SAC tanh-Gaussian ablation in the same loop"""
    figure: Optional[str] = None
    """where to write the figure (default: docs/multigoal.png; docs/multigoal_gaussian.png for the baseline, docs/multigoal_FORK.png for a fork)"""
    script: str = "meow_continuous_action.py"
    """the MEow script whose FlowPolicy and make_update are trained: the original, or a fork of it beside it (ablations/README.md, e.g. fork_affine.py)"""
    torch_threads: int = 1
    """torch CPU threads; the networks are tiny, so one thread is the fastest"""

    # Training budget and hyper-parameters (shared by MEow and the baseline)
    total_timesteps: int = 10_000
    """environment steps per seed (one gradient step each after learning_starts)"""
    learning_starts: int = 1_000
    """uniform random actions and no updates before this many steps"""
    alpha: float = 2.5
    """fixed entropy temperature alpha"""
    sigma_max: float = 1.0
    """upper bound of the MEow prior's log-std"""
    sigma_min: float = -2.0
    """lower bound of the MEow prior's log-std"""
    couplings: int = 4
    """additive coupling layers of the MEow flow, masks alternating (the paper: 4)"""
    dropout: float = 0.1
    """dropout rate in the MEow coupling nets during updates (the paper: 0.1)"""
    gamma: float = 0.9
    """discount factor"""
    tau: float = 0.0005
    """Polyak rate of the target networks"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    batch_size: int = 256
    """minibatch size of each gradient step"""
    buffer_size: int = 100_000
    """replay buffer capacity (transitions)"""
    max_grad_norm: float = 30.0
    """gradient-norm clipping threshold"""

    # The task
    goal_distance: float = 5.0
    """the four goals sit at (+-d, 0) and (0, +-d)"""
    goal_radius: float = 1.0
    """an episode terminates (with the bonus) within this distance of a goal"""
    goal_bonus: float = 10.0
    """reward added on reaching a goal"""
    action_cost: float = 30.0
    """reward penalty per unit of squared action norm"""
    distance_cost: float = 1.0
    """reward penalty per unit of squared distance to the nearest goal"""
    max_episode_steps: int = 30
    """time limit of an episode (a truncation, not a termination)"""
    init_noise: float = 0.1
    """std of the training start position around the origin (evaluation starts exactly at the origin)"""

    # Evaluation
    eval_rollouts: int = 100
    """stochastic rollouts from the start state used to count the goals reached"""


class MultiGoalEnv(gym.Env):
    """A point in the plane moved by its action; four goals around the start.

    reward = -action_cost * |a|^2 - distance_cost * (distance to the nearest goal)^2 [+ goal_bonus on arrival].
    Arriving within goal_radius of a goal terminates the episode; info["goal"] says which (-1: none).
    """

    metadata = {"render_modes": []}

    def __init__(self, goal_distance=5.0, goal_radius=1.0, goal_bonus=10.0, action_cost=30.0, distance_cost=1.0, init_noise=0.1, bound=7.0):
        d = goal_distance
        self.goals = np.array([[d, 0.0], [0.0, d], [-d, 0.0], [0.0, -d]])
        self.goal_radius, self.goal_bonus = goal_radius, goal_bonus
        self.action_cost, self.distance_cost = action_cost, distance_cost
        self.init_noise, self.bound = init_noise, bound
        self.observation_space = gym.spaces.Box(-bound, bound, (2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.pos = np.zeros(2)

    def nearest(self, pos):
        """Index of and distance to the nearest goal, for positions [..., 2]."""
        dists = np.linalg.norm(np.asarray(pos, dtype=np.float64)[..., None, :] - self.goals, axis=-1)
        return dists.argmin(axis=-1), dists.min(axis=-1)

    def cost(self, pos):
        """The state cost distance_cost * min_g |pos - g|^2 for positions [..., 2]: zero exactly on a goal."""
        return self.distance_cost * self.nearest(pos)[1] ** 2

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if options is not None and "pos" in options:
            self.pos = np.array(options["pos"], dtype=np.float64)
        else:
            self.pos = self.init_noise * self.np_random.standard_normal(2)
        return self.pos.astype(np.float32), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.pos = np.clip(self.pos + action, -self.bound, self.bound)
        goal, dist = self.nearest(self.pos)
        reward = -self.action_cost * float(action @ action) - float(self.cost(self.pos))
        terminated = bool(dist <= self.goal_radius)
        if terminated:
            reward += self.goal_bonus
        return self.pos.astype(np.float32), reward, terminated, False, {"goal": int(goal) if terminated else -1}


def make_env(args, seed):
    env = MultiGoalEnv(args.goal_distance, args.goal_radius, args.goal_bonus, args.action_cost, args.distance_cost, args.init_noise)
    env = gym.wrappers.TimeLimit(env, args.max_episode_steps)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


class GaussianSAC(nn.Module):
    """The ablation: SAC with a tanh-Gaussian actor and twin soft Q critics, fixed alpha.

    Its policy is one Gaussian bump per state, whatever shape the critics' Q takes.
    """

    def __init__(self, obs_dim, act_dim, alpha, hidden=64):
        super().__init__()
        self.alpha = alpha
        mlp = lambda n_in, n_out: nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))
        self.actor = mlp(obs_dim, 2 * act_dim)
        self.critics = nn.ModuleList(mlp(obs_dim + act_dim, 1) for _ in range(2))

    def sample(self, obs, deterministic=False):
        mean, log_std = self.actor(obs).chunk(2, dim=-1)
        std = log_std.clamp(-5.0, 2.0).exp()
        z = mean if deterministic else mean + std * torch.randn_like(mean)
        log_prob = torch.distributions.Normal(mean, std).log_prob(z).sum(-1)
        # change of variables through tanh, in the overflow-free form
        log_prob = log_prob - (2.0 * (np.log(2.0) - z - F.softplus(-2.0 * z))).sum(-1)
        return torch.tanh(z), log_prob

    def log_prob(self, obs, actions):
        """log pi(a|s) of given actions in (-1, 1): the Gaussian at atanh(a) and the tanh change of variables."""
        mean, log_std = self.actor(obs).chunk(2, dim=-1)
        z = torch.atanh(actions)
        log_prob = torch.distributions.Normal(mean, log_std.clamp(-5.0, 2.0).exp()).log_prob(z).sum(-1)
        return log_prob - torch.log1p(-actions.pow(2)).sum(-1)

    def q(self, obs, actions):
        x = torch.cat([obs, actions], dim=-1)
        return torch.cat([critic(x) for critic in self.critics], dim=-1)


def make_sac_update(agent, target, args):
    """One SAC step (critics on the soft Bellman target, then the actor), then Polyak on the critics."""
    critic_opt = make_optimizer(agent.critics.parameters(), args.learning_rate)
    actor_opt = make_optimizer(agent.actor.parameters(), args.learning_rate)
    alpha = agent.alpha

    def step(opt, module, loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), args.max_grad_norm)
        opt.step()

    def update(batch):
        with torch.no_grad():
            next_actions, next_log_prob = agent.sample(batch.next_obs)
            next_v = target.q(batch.next_obs, next_actions).min(dim=1).values - alpha * next_log_prob
            y = batch.rewards + args.gamma * (1.0 - batch.terminated) * next_v
        q = agent.q(batch.obs, batch.actions)
        critic_loss = F.mse_loss(q, y[:, None].expand_as(q))
        step(critic_opt, agent.critics, critic_loss)

        actions, log_prob = agent.sample(batch.obs)
        actor_loss = (alpha * log_prob - agent.q(batch.obs, actions).min(dim=1).values).mean()
        step(actor_opt, agent.actor, actor_loss)  # critic grads from this loss are cleared before their next step
        with torch.no_grad():
            for t, p in zip(target.critics.parameters(), agent.critics.parameters()):
                t.lerp_(p, args.tau)
        return critic_loss.detach()

    return update


SCRIPTS = {os.path.abspath(meow_continuous_action.__file__): meow_continuous_action}  # imported once each


def load_script(path):
    """The MEow script at `path` (as given, else relative to the repository root), imported: the
    original or a fork of it (ablations/README.md) that runs beside it."""
    found = [os.path.abspath(p) for p in (path, os.path.join(REPO_ROOT, path)) if os.path.isfile(p)]
    if not found:
        raise SystemExit("error: no such MEow script: %s (neither here nor in %s)" % (path, REPO_ROOT))
    if found[0] not in SCRIPTS:
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(found[0]))[0], found[0])
        SCRIPTS[found[0]] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(SCRIPTS[found[0]])
    return SCRIPTS[found[0]]


def make_flow(args):
    """The script's FlowPolicy (MEow's by default) with args.couplings couplings and dropout args.dropout in their nets.

    FlowPolicy builds the paper's 4 couplings with dropout 0.1; other counts and rates are made from
    it afterwards, so that the defaults draw the same initial weights as FlowPolicy alone.
    """
    flow = load_script(args.script).FlowPolicy(2, 2, args.alpha, args.sigma_max, args.sigma_min)
    for i in range(len(flow.couplings), args.couplings):  # check_args: only additive flows get more
        net = MLP([2 + 2, flow.hidden, flow.hidden, 2], init="orthogonal", layer_norm=True, dropout=args.dropout)
        flow.couplings.append(AdditiveCoupling(flow.couplings[i % 2].mask.clone(), net))
    del flow.couplings[args.couplings :]
    # FlowPolicy lists its dropout layers once, at construction: the list has to follow the couplings
    flow._dropouts = [m for m in flow.modules() if isinstance(m, Dropout)]
    for layer in flow._dropouts:
        layer.p = args.dropout
    return flow


def build_agent(args):
    """The agent and its update function; the target network is a frozen copy (Polyak-averaged)."""
    if args.baseline == "gaussian":
        agent, target = GaussianSAC(2, 2, args.alpha), GaussianSAC(2, 2, args.alpha)
    else:
        agent, target = make_flow(args), make_flow(args)
    target.load_state_dict(agent.state_dict())
    target.requires_grad_(False)
    target.eval()
    if args.baseline == "gaussian":
        return agent, make_sac_update(agent, target, args)
    # MEow: the single soft-Bellman loss trains policy and critic at once, no actor loss
    update, _ = load_script(args.script).make_update(agent, target, args.learning_rate, args.gamma, args.tau, args.max_grad_norm)
    return agent, update


def act(agent, obs, deterministic=False):
    agent.eval()  # no dropout while acting (MEow's coupling nets use it in training)
    with torch.no_grad():
        actions, _ = agent.sample(torch.as_tensor(np.asarray(obs), dtype=torch.float32).reshape(-1, 2), deterministic)
    return actions.numpy()


def soft_q(agent, obs, actions):
    """min over the soft Q columns. For MEow this is alpha * log pi(a|s) + V(s): the policy itself."""
    with torch.no_grad():
        if isinstance(agent, GaussianSAC):
            q = agent.q(obs, actions)
        else:
            q, _ = agent.q_and_v(obs, actions)
    return q.min(dim=1).values


def train(args, seed, on_step=None):
    """Train one agent; on_step(steps_done, agent), if given, is called after every environment step."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    env = make_env(args, seed)
    agent, update = build_agent(args)
    rb = ReplayBuffer(args.buffer_size, 2, 2, "cpu")
    obs, _ = env.reset(seed=seed)
    returns, episode_return = [], 0.0
    for global_step in range(args.total_timesteps):
        if global_step < args.learning_starts:
            action = env.action_space.sample()
        else:
            action = act(agent, obs)[0]
        next_obs, reward, terminated, truncated, _ = env.step(action)
        # a time-out is stored as not terminated, so the soft Bellman target still bootstraps from it
        rb.add(*[torch.as_tensor(np.asarray(x, dtype=np.float32))[None] for x in (obs, action, reward, next_obs, terminated)])
        obs, episode_return = next_obs, episode_return + reward
        if terminated or truncated:
            returns.append(episode_return)
            (obs, _), episode_return = env.reset(), 0.0
        if global_step >= args.learning_starts:
            update(rb.sample(args.batch_size))
        if on_step is not None:
            on_step(global_step + 1, agent)
        if (global_step + 1) % 2_000 == 0:
            recent = np.mean(returns[-50:]) if returns else float("nan")
            print("  seed %d step %d/%d | mean return (last 50 episodes) %.1f" % (seed, global_step + 1, args.total_timesteps, recent))
    env.close()
    return agent


def rollouts(agent, args, seed):
    """Stochastic episodes from exactly the origin: (list of [T+1, 2] paths, goal index or -1 for each)."""
    env = make_env(args, seed)
    paths, goals = [], []
    for _ in range(args.eval_rollouts):
        obs, _ = env.reset(options={"pos": (0.0, 0.0)})
        path, goal, done = [obs], -1, False
        while not done:
            obs, _, terminated, truncated, info = env.step(act(agent, obs)[0])
            path.append(obs)
            goal, done = info["goal"], terminated or truncated
        paths.append(np.array(path))
        goals.append(goal)
    env.close()
    return paths, np.array(goals)


def goal_report(goals, goal_xy):
    """One line: how many distinct goals were reached, the share per goal, and the rollouts that reached none."""
    n = len(goals)
    shares = ["(%+g, %+g) %d%%" % (x, y, round(100.0 * np.sum(goals == i) / n)) for i, (x, y) in enumerate(goal_xy)]
    missed = np.flatnonzero(goals < 0)
    line = "reached %d/%d goals in %d rollouts | %s | none %d%%" % (
        len(set(goals[goals >= 0].tolist())), len(goal_xy), n, ", ".join(shares), round(100.0 * len(missed) / n))
    if len(missed):
        shown = ", ".join(str(i) for i in missed[:10])
        line += " (rollouts %s%s)" % (shown, ", ... %d more" % (len(missed) - 10) if len(missed) > 10 else "")
    return line


GOAL_COLOURS = ["tab:red", "tab:blue", "tab:green", "tab:orange"]


def draw_figure(agent, args, paths, goals, title, path):
    """Left: trajectories over the state cost, coloured by the goal they reach.
    Right: soft Q over the start state's action plane, with the policy's action samples on top."""
    task = MultiGoalEnv(args.goal_distance, args.goal_radius, distance_cost=args.distance_cost)
    fig, (ax_traj, ax_q) = plt.subplots(1, 2, figsize=(11, 5))

    xs = np.linspace(-7, 7, 141)
    grid = np.stack(np.meshgrid(xs, xs), axis=-1)
    cs = ax_traj.contourf(xs, xs, task.cost(grid), levels=20, cmap="Greys", alpha=0.6)
    fig.colorbar(cs, ax=ax_traj, label="distance cost")
    for p, g in zip(paths, goals):
        ax_traj.plot(p[:, 0], p[:, 1], color=GOAL_COLOURS[g] if g >= 0 else "black", lw=0.8, alpha=0.6)
    for i, (x, y) in enumerate(task.goals):
        ax_traj.add_patch(plt.Circle((x, y), args.goal_radius, fill=False, color=GOAL_COLOURS[i], lw=2))
        ax_traj.plot(x, y, "*", color=GOAL_COLOURS[i], ms=14, mec="black")
    ax_traj.plot(0, 0, "ko", ms=5)
    ax_traj.set(xlim=(-7, 7), ylim=(-7, 7), aspect="equal", xlabel="x", ylabel="y")
    reached = len(set(int(g) for g in goals if g >= 0))
    ax_traj.set_title("%s: %d rollouts, %d/4 goals reached" % (title, len(paths), reached), fontsize=10)

    # stay inside (-1, 1): the tanh squash puts the edges of the box at infinite pre-activation
    acts = np.linspace(-0.99, 0.99, 99)
    a_grid = torch.as_tensor(np.stack(np.meshgrid(acts, acts), axis=-1).reshape(-1, 2), dtype=torch.float32)
    agent.eval()
    q = soft_q(agent, torch.zeros(len(a_grid), 2), a_grid).numpy().reshape(len(acts), len(acts))
    # show the top 12 alpha of Q: below that exp(Q / alpha) carries no probability mass, and the very
    # negative values near the box edges would otherwise flatten the colour scale
    levels = np.linspace(max(q.min(), q.max() - 12.0 * args.alpha), q.max(), 25)
    cs = ax_q.contourf(acts, acts, np.maximum(q, levels[0]), levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax_q, label="soft Q(s0, a), min of the 2 heads")
    samples = act(agent, np.zeros((300, 2), dtype=np.float32))
    ax_q.scatter(samples[:, 0], samples[:, 1], s=4, c="white", edgecolors="none", alpha=0.8, label="a ~ pi(.|s0)")
    ax_q.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", xlabel="action x", ylabel="action y")
    if isinstance(agent, GaussianSAC):
        ax_q.set_title("SAC critics' soft Q at s0 = (0, 0)\n(the actor is one Gaussian per state)", fontsize=10)
    else:
        ax_q.set_title("MEow's soft Q at s0 = (0, 0)\n= alpha log pi(a|s0) + V(s0): the policy itself", fontsize=10)
    ax_q.legend(loc="upper right", fontsize=8, markerscale=3)

    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_args(args):
    """Fail early, in one line, on settings that cannot run."""
    problems = []
    if not args.seeds:
        problems.append("--seeds needs at least one seed")
    if args.alpha <= 0 or args.sigma_min >= args.sigma_max:
        problems.append("need --alpha > 0 and --sigma-min < --sigma-max")
    if args.couplings < 1 or not 0.0 <= args.dropout < 1.0:
        problems.append("need --couplings >= 1 and 0 <= --dropout < 1")
    if args.total_timesteps <= args.learning_starts or args.batch_size < 1 or args.eval_rollouts < 1:
        problems.append("need --total-timesteps > --learning-starts, --batch-size >= 1 and --eval-rollouts >= 1")
    if args.baseline == "none":
        couplings = load_script(args.script).FlowPolicy(2, 2, 1.0, 0.0, -1.0).couplings
        if args.couplings > len(couplings) and not isinstance(couplings[0], AdditiveCoupling):
            problems.append("--couplings above %d adds additive couplings, and %s's are %s" % (len(couplings), args.script, type(couplings[0]).__name__))
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def agent_name(args):
    """The baseline, MEow, or MEow of a fork (its file name): how reports and figures name the agent."""
    if args.baseline == "gaussian":
        return "Gaussian SAC"
    script = load_script(args.script)
    return "MEow" if script is meow_continuous_action else "MEow (%s)" % os.path.basename(script.__file__)


def main(args):
    check_args(args)
    torch.set_num_threads(args.torch_threads)
    name = agent_name(args)
    fork = os.path.splitext(os.path.basename(args.script))[0]
    default_figure = "multigoal_gaussian.png" if args.baseline == "gaussian" else "multigoal.png" if name == "MEow" else "multigoal_%s.png" % fork
    figure = args.figure or os.path.join(REPO_ROOT, "docs", default_figure)
    goal_xy = MultiGoalEnv(args.goal_distance).goals
    print("%s on the multi-goal task, seeds %s, %d steps each" % (name, list(args.seeds), args.total_timesteps))
    lines = []
    for k, seed in enumerate(args.seeds):
        start = time.time()
        agent = train(args, seed)
        # a fixed seed for the rollouts: the goal count then depends only on the trained policy
        torch.manual_seed(seed + 10_000)
        paths, goals = rollouts(agent, args, seed + 10_000)
        line = "%s seed %d: %s" % (name, seed, goal_report(goals, goal_xy))
        print(line + " [%.0f s]" % (time.time() - start))
        lines.append(line)
        if k == 0:
            draw_figure(agent, args, paths, goals, "%s, seed %d" % (name, seed), figure)
            print("figure written to %s" % figure)
    if len(lines) > 1:
        print("summary:\n" + "\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
