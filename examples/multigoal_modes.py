"""How far MEow and the tanh-Gaussian baseline are from the exact soft-optimal policy of the multi-goal task.

Solves the task by soft value iteration (examples/soft_optimal.py), then trains each policy for each seed
(the loop of examples/multigoal.py) and, after each of --steps, measures at three named states:
KL(pi* || pi), the total variation and the number of modes of pi, plus the modes of the density of
z = atanh(a), pi(tanh z) * prod_i (1 - tanh(z_i)^2), on a uniform grid of z (on the grid of a, the
cells near the box's edges are far apart in z and a curved ridge there shows as spurious maxima). The
z grid ends at |a| = 0.9993: when a policy's mass lies at the box's edges beyond it, this count sees
the cut, not modes. MEow's log pi comes from its flow, the Gaussian's from its tanh change of variables.

Why the pre-tanh count: MEow's flow maps a Gaussian through additive couplings, which preserve volume,
so its pre-tanh density is the Gaussian's density carried along the map, and every super-level set of it is
the image of a ball: connected. Such a density has one mode, whatever the couplings learn; only the
tanh's Jacobian prod_i 1 / (1 - a_i^2) can split it into several. pi* has no such restriction.

Prints one Markdown table and draws, for the first seed after the last --steps, pi* next to each
policy's pi at the start state on one colour scale.

Run (from anywhere): python examples/multigoal_modes.py --seeds 1 2 3 --steps 10000 30000
"""
import copy
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import matplotlib

matplotlib.use("Agg")  # headless: the figure only ever goes to a file
import matplotlib.pyplot as plt
import numpy as np
import torch
import tyro

import multigoal as mg
import soft_optimal as so

# where the distances are measured: pi* has 4, 2 and 1 modes there at the defaults
STATES = (("start (0, 0)", (0.0, 0.0)), ("between goals (2.5, 2.5)", (2.5, 2.5)), ("on the way (2.5, 0)", (2.5, 0.0)))


@dataclass
class Args:
    seeds: Tuple[int, ...] = (1,)
    """seeds to train, one run per policy and seed"""
    steps: Tuple[int, ...] = (10_000,)
    """measure after each of these many environment steps (one run to the largest)"""
    policies: Tuple[Literal["meow", "gaussian"], ...] = ("meow", "gaussian")
    """which policies to train and measure"""
    figure: Optional[str] = None
    """where to write the figure (default: docs/multigoal_modes.png, or docs/multigoal_modes_FORK.png for a fork)"""
    script: str = "meow_continuous_action.py"
    """the MEow script whose policy is trained as "meow": the original, or a fork of it beside it (ablations/README.md, e.g. fork_affine.py)"""
    torch_threads: int = 1
    """torch CPU threads; the networks are tiny, so one thread is the fastest"""
    cells_per_unit: int = 10
    """soft value iteration grid: positions and actions on multiples of 1 / cells_per_unit"""
    action_cells: int = 101
    """the distances are measured on the centres of this many x this many cells over the action box (odd: a centre on each axis)"""
    mode_share: float = 0.1
    """a peak of a density counts as a mode when its prominence is at least this share of the highest value"""

    # The settings the per-cause experiments change (defaults: the paper's toy settings, as examples/multigoal.py)
    alpha: float = 2.5
    """entropy temperature, for the policies and for pi*"""
    sigma_max: float = 1.0
    """upper bound of the MEow prior's log-std"""
    sigma_min: float = -2.0
    """lower bound of the MEow prior's log-std"""
    couplings: int = 4
    """additive coupling layers of the MEow flow"""
    dropout: float = 0.1
    """dropout rate in the MEow coupling nets during updates"""


def log_density(agent, pos, actions):
    """log pi(a|s) of a trained agent at one state, for actions [N, 2] in (-1, 1)."""
    # in float64, as pi*: flat tops and ridges of the density are then free of float32 rounding
    agent = copy.deepcopy(agent).double().eval()  # eval: no dropout, the acting policy
    obs = torch.tensor(pos, dtype=torch.float64).expand(len(actions), 2)
    with torch.no_grad():
        return agent.log_prob(obs, torch.as_tensor(actions, dtype=torch.float64)).numpy()


def pre_tanh_grid(n=161, half_width=4.0):
    """Actions tanh(z) [n * n, 2] for z on a uniform n x n grid over [-half_width, half_width]^2, and
    log prod_i (1 - a_i^2), which turns log pi(a) into the log density of z. The default grid reaches
    |a| = 0.9993; a density with its mass beyond is cut there."""
    z = np.linspace(-half_width, half_width, n)
    a = np.tanh(np.stack(np.meshgrid(z, z, indexing="ij"), axis=-1).reshape(-1, 2))
    return a, np.log1p(-a ** 2).sum(-1)


def pre_tanh_modes(log_p, log_jacobian, share):
    """Modes of the density of z = atanh(a), from log pi (up to a constant) on pre_tanh_grid's actions."""
    log_pz = log_p + log_jacobian
    n = int(round(np.sqrt(len(log_pz))))
    return so.count_modes(np.exp(log_pz - log_pz.max()).reshape(n, n), share)


def measure(log_p_star, log_p, area, share):
    """The distances to pi*; log_p holds log pi on the action cells, then on pre_tanh_grid's actions."""
    cells = len(log_p_star)
    kl, tv, modes = so.distances(log_p_star, log_p[:cells], area, share)
    return dict(kl=kl, tv=tv, modes=modes, pre_tanh=pre_tanh_modes(log_p[cells:], pre_tanh_grid()[1], share))


def table(star_modes, rows):
    """Markdown: one row per policy, seed and length; per state 'KL / TV / modes (pre-tanh modes)'."""
    head = "| policy | seed | steps | " + " | ".join(name for name, _ in STATES) + " |"
    lines = [head, "|" + "---|" * (3 + len(STATES))]
    lines.append("| pi* (exact) | | | " + " | ".join("0 / 0 / %d (%d)" % m for m in star_modes) + " |")
    for name, seed, steps, per_state in rows:
        cells = ["%.2f / %.2f / %d (%d)" % (m["kl"], m["tv"], m["modes"], m["pre_tanh"]) for m in per_state]
        lines.append("| %s | %d | %d | %s |" % (name, seed, steps, " | ".join(cells)))
    return "\n".join(lines)


def draw_figure(density_star, panels, n, share, path):
    """pi* and each policy's pi at the start state, one colour scale; each titled with its KL, TV and modes."""
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4.2 * (1 + len(panels)), 4.2), squeeze=False, sharey=True)
    axes = axes[0]
    vmax = max(density_star.max(), *(d.max() for _, d, _ in panels))
    titles = ["pi*(a|s0), exact (soft value iteration)\n%d modes" % so.count_modes(density_star.reshape(n, n), share)]
    titles += ["%s\nKL(pi*||pi) %.2f, TV %.2f, %d modes" % (t, m["kl"], m["tv"], m["modes"]) for t, _, m in panels]
    for ax, density, title in zip(axes, [density_star] + [d for _, d, _ in panels], titles):
        # rows of the grid run along action x: transpose so that x is horizontal
        image = ax.imshow(density.reshape(n, n).T, origin="lower", extent=(-1, 1, -1, 1), vmin=0.0, vmax=vmax, cmap="viridis")
        ax.set_xlabel("action x")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("action y")
    fig.colorbar(image, ax=list(axes), label="density at s0 = (0, 0)", shrink=0.85)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def check_args(args):
    """Fail early, in one line, on settings that cannot run."""
    problems = []
    if not args.seeds or not args.steps or not args.policies:
        problems.append("--seeds, --steps and --policies need at least one value each")
    if args.steps and max(args.steps) <= mg.Args.learning_starts:
        problems.append("the largest --steps must exceed the %d random steps before learning" % mg.Args.learning_starts)
    if args.cells_per_unit < 1 or args.action_cells < 3 or not 0.0 < args.mode_share <= 1.0:
        problems.append("need --cells-per-unit >= 1, --action-cells >= 3 and 0 < --mode-share <= 1")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def main(args):
    check_args(args)
    torch.set_num_threads(args.torch_threads)
    fork = os.path.splitext(os.path.basename(args.script))[0]
    default_figure = "multigoal_modes.png" if mg.load_script(args.script) is mg.meow_continuous_action else "multigoal_modes_%s.png" % fork
    figure = args.figure or os.path.join(mg.REPO_ROOT, "docs", default_figure)
    train_args = mg.Args(total_timesteps=max(args.steps), alpha=args.alpha, sigma_max=args.sigma_max, sigma_min=args.sigma_min,
                         couplings=args.couplings, dropout=args.dropout, script=args.script)
    mg.check_args(train_args)
    task = mg.MultiGoalEnv(train_args.goal_distance, train_args.goal_radius, train_args.goal_bonus, train_args.action_cost,
                           train_args.distance_cost)
    start = time.time()
    sol = so.soft_value_iteration(task, args.alpha, train_args.gamma, args.cells_per_unit)
    print("soft value iteration: %d sweeps, max soft Bellman residual %.1e, V*(s0) %.2f [%.0f s]"
          % (sol.sweeps, sol.residual, sol.value([0.0, 0.0]), time.time() - start))
    actions, area = so.action_cells(args.action_cells)
    z_actions, log_jacobian = pre_tanh_grid()
    log_p_star = [sol.log_density(pos, actions, area) for _, pos in STATES]
    # (S3) up to the normaliser, which the mode count does not need
    star_modes = [(so.count_modes(np.exp(lp).reshape(args.action_cells, -1), args.mode_share),
                   pre_tanh_modes(sol.q(np.array(pos), z_actions) / args.alpha, log_jacobian, args.mode_share))
                  for lp, (_, pos) in zip(log_p_star, STATES)]
    both = np.concatenate([actions, z_actions])

    rows, panels = [], []
    for policy in args.policies:
        train_args.baseline = "gaussian" if policy == "gaussian" else "none"
        name = mg.agent_name(train_args)
        for k, seed in enumerate(args.seeds):
            start = time.time()
            found = {}

            def on_step(step, agent):
                if step in args.steps:
                    found[step] = [log_density(agent, pos, both) for _, pos in STATES]

            mg.train(train_args, seed, on_step)
            for steps in sorted(found):
                per_state = [measure(lp_star, lp, area, args.mode_share) for lp_star, lp in zip(log_p_star, found[steps])]
                rows.append((name, seed, steps, per_state))
                print("%s seed %d, %d steps: %s" % (name, seed, steps, "; ".join(
                    "%s KL %.3f TV %.3f modes %d (pre-tanh %d)" % (state, m["kl"], m["tv"], m["modes"], m["pre_tanh"])
                    for (state, _), m in zip(STATES, per_state))))
            print("  [%.0f s]" % (time.time() - start))
            if k == 0:
                last = max(found)
                title = "%s, seed %d, %dk steps" % (name, seed, last // 1000)
                panels.append((title, np.exp(found[last][0][: len(actions)]), rows[-1][3][0]))
    print(table(star_modes, rows))
    draw_figure(np.exp(log_p_star[0]), panels, args.action_cells, args.mode_share, figure)
    print("figure written to %s" % figure)


if __name__ == "__main__":
    main(tyro.cli(Args))
