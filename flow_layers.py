"""Flow layers shared by the MEow scripts.

Every bijective layer maps x -> y with `forward(x, context)` and y -> x with
`inverse(y, context)`; both return `(tensor, log_abs_det)` where log_abs_det is the
per-sample log |det dy/dx| (forward) or log |det dx/dy| (inverse), shape [B].
`context` is the observation the layer is conditioned on, [B, n]; x may carry more leading axes
([2, B, d]), over which the context broadcasts, and then log_abs_det broadcasts to them.

Kept valid for Python 3.8 and torch >= 1.13 (Isaac Gym Preview 4 machines).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Swish(nn.Module):
    """x * sigmoid(beta * x) with a learnable beta per unit."""

    def __init__(self, dim):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


def keep_mask(shape, p, device=None, dtype=None):
    """Inverted dropout's multiplier: Bernoulli(1 - p) draws divided by 1 - p (0 or 1 / (1 - p))."""
    return torch.rand(shape, device=device, dtype=dtype).ge_(p).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """Inverted dropout: in training, zero each unit with probability p and scale the rest by 1 / (1 - p).

    The layer draws its own keep_mask unless its network has handed it one in `mask`:
    FlowPolicy.dropout_masks draws the masks of all its dropout layers at once, so that under
    torch.compile they enter the compiled loss as inputs instead of being drawn inside it.
    """

    def __init__(self, p):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError("dropout probability must be in [0, 1), got %r" % (p,))
        self.p = p
        self.mask = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        mask = keep_mask(x.shape, self.p, x.device, x.dtype) if self.mask is None else self.mask
        return x * mask


class MLP(nn.Module):
    """Linear -> [LayerNorm] -> Swish -> [Dropout] for each hidden layer, then Linear.

    init="zero" zeroes every weight matrix (biases keep PyTorch's default), so the net
    starts as a state-independent constant yet still learns; init="orthogonal" uses
    orthogonal weight matrices.
    """

    def __init__(self, sizes, init="orthogonal", layer_norm=False, dropout=0.0):
        super().__init__()
        if init not in ("zero", "orthogonal"):
            raise ValueError("init must be 'zero' or 'orthogonal', got %r" % (init,))
        layers = []
        for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
            layers.append(nn.Linear(n_in, n_out))
            if layer_norm:
                layers.append(nn.LayerNorm(n_out))
            layers.append(Swish(n_out))
            if dropout > 0:
                layers.append(Dropout(dropout))
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        for layer in layers:
            if isinstance(layer, nn.Linear):
                if init == "zero":
                    nn.init.zeros_(layer.weight)
                else:
                    nn.init.orthogonal_(layer.weight)
        self.net = nn.Sequential(*layers)

    def forward(self, x, context=None):
        """The net of x, or of the concatenation [x, context] along the last dim.

        With a context, the first layer multiplies x and the context each by its own columns of the
        weight and adds the two: their leading dims broadcast, so a context shared by several x (the
        observation of both Q columns' passes) is multiplied once.
        """
        if context is None:
            return self.net(x)
        first = self.net[0]
        w_x, w_context = first.weight.split([x.shape[-1], context.shape[-1]], dim=1)
        return self.net[1:](F.linear(x, w_x) + F.linear(context, w_context, first.bias))


class AdditiveCoupling(nn.Module):
    """Conditional additive coupling (NICE): y = x + (1 - m) * t(m * x, s).

    Translation only, so the Jacobian is triangular with a unit diagonal: log-det 0.
    """

    def __init__(self, mask, shift_net):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.register_buffer("unmasked", 1.0 - mask.float())
        self.shift_net = shift_net

    def _shift(self, x, context):
        return self.unmasked * self.shift_net(self.mask * x, context)

    def forward(self, x, context):
        return x + self._shift(x, context), x.new_zeros(x.shape[:-1])

    def inverse(self, y, context):
        # the masked half passes through unchanged, so the shift can be recomputed from y
        return y - self._shift(y, context), y.new_zeros(y.shape[:-1])


class ConditionalGaussianScale(nn.Module):
    """The state-conditioned diagonal Gaussian prior, written as a scaling of N(0, I).

    z = sigma(s) * eps with log sigma(s) = sigma_min + (sigma_max - sigma_min) * (tanh(h(s)) + 1) / 2,
    so z ~ N(0, diag sigma(s)^2) when eps ~ N(0, I). Its log-det sum_j log sigma_j(s)
    depends on the state only: this is the normaliser of the energy-based reading.
    """

    def __init__(self, log_std_net, sigma_max, sigma_min):
        super().__init__()
        self.log_std_net = log_std_net
        self.sigma_max = sigma_max
        self.sigma_min = sigma_min

    def log_std(self, context):
        squashed = (torch.tanh(self.log_std_net(context)) + 1.0) / 2.0
        return self.sigma_min + (self.sigma_max - self.sigma_min) * squashed

    def forward(self, eps, context):
        log_std = self.log_std(context)
        return eps * log_std.exp(), log_std.sum(-1)

    def inverse(self, z, context):
        log_std = self.log_std(context)
        return z * (-log_std).exp(), -log_std.sum(-1)


class TanhSquash(nn.Module):
    """a = tanh(z), onto the action box (-1, 1)."""

    def __init__(self, clip=1e-5):
        super().__init__()
        self.clip = clip

    @staticmethod
    def log_one_minus_a_sq(a):
        """sum_j log(1 - a_j^2), the log-det of atanh's Jacobian with a sign flip."""
        return torch.log1p(-a.pow(2)).sum(-1)

    def forward(self, z, context=None):
        # log(1 - tanh(z)^2) = 2 * (log 2 - z - softplus(-2z)), stable for large |z|
        log_det = (2.0 * (math.log(2.0) - z - F.softplus(-2.0 * z))).sum(-1)
        return torch.tanh(z), log_det

    def inverse(self, a, context=None):
        # clip so that atanh stays finite for actions on (or rounded onto) the boundary
        a = a.clamp(-1.0 + self.clip, 1.0 - self.clip)
        return torch.atanh(a), -self.log_one_minus_a_sq(a)


class RewardShift(nn.Module):
    """Two learnable state-dependent reward shifts b_1(s), b_2(s): output [B, 2].

    They enter Q and V alike, so they cancel in pi = exp((Q - V) / alpha).
    """

    def __init__(self, obs_dim, hidden=256):
        super().__init__()
        self.nets = nn.ModuleList([MLP([obs_dim, hidden, hidden, 1], init="zero") for _ in range(2)])

    def forward(self, context):
        return torch.cat([net(context) for net in self.nets], dim=-1)
