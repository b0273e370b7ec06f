"""The exact soft-optimal policy of the multi-goal task, and how far a learned policy is from it.

Soft value iteration (Ziebart, 2010; the soft Bellman equations of Haarnoja et al., 2017) on a grid.
With the task's reward r, the temperature alpha and the discount gamma, the soft-optimal Q*, V*, pi* solve

    Q*(s, a) = r(s, a) + gamma * (1 - done(s, a)) * V*(s')                    (S1)
    V*(s)    = alpha * log integral_{[-1, 1]^2} exp(Q*(s, a) / alpha) da        (S2)
    pi*(a|s) = exp((Q*(s, a) - V*(s)) / alpha)                               (S3)

where s' = clip(s + a) and done(s, a) says that s' lies within the goal radius. A time-out is not a
termination in (S1): MEow and the SAC baseline bootstrap at time-outs, so their fixed point is this
stationary solution, and the episode limit only decides which states they see. (k sweeps from V = 0
give the soft value of a k-step episode at its first step. At the example's settings a sweep changes V
by less than 1e-6 after 20 sweeps, so a 30-step episode starts with this pi*.)

Positions lie on the grid i / k of the task's square and actions on the grid j / k of the action box,
so s + a is a grid point and (S1) needs no interpolation; the integral in (S2) is the trapezoid rule.
Elsewhere, at any state and action, Q* is one backup (S1) of the grid's V* read bilinearly.

Distances of a learned pi to pi* at a state, on the cell centres of an n x n grid over the action box:
KL(pi* || pi), the total variation 1 - integral min(pi*, pi), and the number of modes (peaks whose
prominence is at least a share of the highest density).
"""
from dataclasses import dataclass

import numpy as np


def transition(task, pos, actions):
    """Next positions, rewards and terminations of `task` (a MultiGoalEnv) for arrays [..., 2], as its step()."""
    actions = np.clip(actions, -1.0, 1.0)
    next_pos = np.clip(pos + actions, -task.bound, task.bound)
    reward, done = reward_and_done(task, next_pos, actions)
    return next_pos, reward, done


def reward_and_done(task, next_pos, actions):
    done = task.nearest(next_pos)[1] <= task.goal_radius
    reward = -task.action_cost * np.sum(actions ** 2, axis=-1) - task.cost(next_pos) + task.goal_bonus * done
    return reward, done


def soft_max(q, log_weights, alpha):
    """(S2) for rows of Q on an action grid with quadrature weights: alpha * log sum_j w_j exp(Q_j / alpha)."""
    z = q / alpha + log_weights
    top = z.max(axis=-1, keepdims=True)
    return alpha * (top[..., 0] + np.log(np.exp(z - top).sum(axis=-1)))


@dataclass
class SoftOptimal:
    """V* of a task on the position grid, and pi* anywhere from it."""

    task: object
    alpha: float
    gamma: float
    positions: np.ndarray  # [n] the grid's coordinates along each axis
    v: np.ndarray  # [n, n] V*(x_i, y_j)
    sweeps: int  # soft Bellman sweeps run
    residual: float  # max over the grid of |V - (soft Bellman backup of V)| after the last sweep

    def value(self, pos):
        """V* at positions [..., 2], bilinear between grid points (exact on them)."""
        n, lo = len(self.positions), self.positions[0]
        step = self.positions[1] - self.positions[0]
        u = (np.asarray(pos, dtype=np.float64) - lo) / step
        i = np.clip(np.floor(u).astype(int), 0, n - 2)
        f = np.clip(u - i, 0.0, 1.0)
        fx, fy, ix, iy = f[..., 0], f[..., 1], i[..., 0], i[..., 1]
        v = self.v
        return ((1 - fx) * (1 - fy) * v[ix, iy] + fx * (1 - fy) * v[ix + 1, iy]
                + (1 - fx) * fy * v[ix, iy + 1] + fx * fy * v[ix + 1, iy + 1])

    def q(self, pos, actions):
        """Q*(s, a) by one backup (S1) of V*, for positions and actions that broadcast over [..., 2]."""
        next_pos, reward, done = transition(self.task, pos, actions)
        return reward + self.gamma * ~done * self.value(next_pos)

    def log_density(self, pos, actions, cell_area):
        """log pi*(a|s) (S3) at one state over the action cells of equal area `cell_area`; (S2) is their sum."""
        q = self.q(np.asarray(pos, dtype=np.float64), actions)
        return (q - soft_max(q, np.log(cell_area), self.alpha)) / self.alpha


def soft_value_iteration(task, alpha, gamma, cells_per_unit=10, tol=1e-6, max_sweeps=2_000):
    """Solve (S1)-(S2) on the grid of step 1 / cells_per_unit by sweeps V <- backup(V) from V = 0.

    Each sweep contracts the error by gamma; it stops once a sweep changes V by less than tol.
    """
    k = cells_per_unit
    half = round(task.bound * k)
    if k < 1 or abs(half - task.bound * k) > 1e-9:
        raise ValueError("the task's bound %g needs a whole number of cells (cells_per_unit %r)" % (task.bound, k))
    n = 2 * half + 1
    positions = np.arange(-half, half + 1) / k
    steps = np.arange(-k, k + 1)
    actions = np.stack(np.meshgrid(steps, steps, indexing="ij"), axis=-1).reshape(-1, 2) / k
    # the trapezoid rule over [-1, 1]^2: the box's edges count half
    w = np.full(2 * k + 1, 1.0 / k)
    w[[0, -1]] /= 2
    log_w = np.log(np.outer(w, w)).ravel()

    ix, iy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ix, iy = ix.ravel(), iy.ravel()
    # the next grid point of every (s, a): index arithmetic, so the clip at the border is exact
    jx = np.clip(ix[:, None] + np.repeat(steps, len(steps))[None, :], 0, n - 1)
    jy = np.clip(iy[:, None] + np.tile(steps, len(steps))[None, :], 0, n - 1)
    next_index = jx * n + jy
    reward, done = reward_and_done(task, np.stack([positions[jx], positions[jy]], axis=-1), actions[None])
    carry = gamma * ~done

    v = np.zeros(n * n)
    for sweep in range(1, max_sweeps + 1):
        v_new = soft_max(reward + carry * v[next_index], log_w, alpha)  # (S1), (S2)
        change = np.abs(v_new - v).max()
        v = v_new
        if change < tol:
            break
    residual = np.abs(soft_max(reward + carry * v[next_index], log_w, alpha) - v).max()
    return SoftOptimal(task, alpha, gamma, positions, v.reshape(n, n), sweep, residual)


def action_cells(n):
    """Centres [n * n, 2] of an n x n grid of cells over the action box (row-major, x first), and the cell area.

    Odd n puts a centre on a = 0 and on both axes, where the task's symmetric modes lie.
    """
    c = -1.0 + (np.arange(n) + 0.5) * 2.0 / n
    return np.stack(np.meshgrid(c, c, indexing="ij"), axis=-1).reshape(-1, 2), (2.0 / n) ** 2


def count_modes(density, share):
    """Modes of a density on a square grid: peaks whose prominence is at least `share` of the highest value.

    The prominence of a peak is how far the density must fall from it, along the best path over the grid
    (8 neighbours), before it can rise to a higher peak; the highest peak's is its own height. Mere local
    maxima would also count the bumps that a grid sees along a thin curved ridge, which are not modes.
    The prominences come from one sweep over the cells from the highest down, merging the
    neighbouring regions that each cell joins (union-find): where two regions meet, the lower peak's
    prominence is its height minus the current level.
    """
    n_rows, n_cols = density.shape
    flat = density.ravel()
    parent = np.full(flat.size, -1)  # -1: not reached yet; a root's region is labelled by its peak
    prominent = 0

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in np.argsort(-flat, kind="stable"):
        parent[i] = i
        r, c = divmod(int(i), n_cols)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr or dc) and 0 <= rr < n_rows and 0 <= cc < n_cols and parent[rr * n_cols + cc] >= 0:
                    a, b = root(i), root(rr * n_cols + cc)
                    if a == b:
                        continue
                    low, high = (a, b) if flat[a] < flat[b] else (b, a)
                    prominent += flat[low] - flat[i] >= share * flat.max()
                    parent[low] = high
    return int(prominent) + 1  # the highest peak never meets a higher one


def distances(log_p_star, log_p, cell_area, share):
    """KL(pi* || pi), total variation and the number of modes of pi, from log densities on equal cells."""
    p_star, p = np.exp(log_p_star), np.exp(log_p)
    kl = float(np.sum(cell_area * p_star * (log_p_star - log_p)))
    # 1 - integral min(pi*, pi) is (1/2) integral |pi* - pi| for two densities; unlike the latter on a
    # grid, it does not count as a difference the mass of pi that falls outside the cells' centres
    tv = float(1.0 - np.sum(cell_area * np.minimum(p_star, p)))
    n = int(round(np.sqrt(len(log_p))))
    return kl, tv, count_modes(p.reshape(n, n), share)
