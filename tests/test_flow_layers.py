"""Each flow layer is a bijection whose reported log-det matches autograd's Jacobian."""
import pytest
import torch

from flow_layers import MLP, AdditiveCoupling, ConditionalGaussianScale, Dropout, RewardShift, Swish, TanhSquash

OBS_DIM, ACT_DIM = 5, 3


def randomise(module, scale=0.3, seed=0):
    """Non-trivial weights: the zero-initialised nets would otherwise make layers the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return module


def make_layers():
    torch.manual_seed(0)
    mask = torch.tensor([1.0, 0.0, 1.0])
    return {
        "coupling": randomise(AdditiveCoupling(mask, MLP([ACT_DIM + OBS_DIM, 16, 16, ACT_DIM], layer_norm=True))),
        "coupling_flipped": randomise(AdditiveCoupling(1 - mask, MLP([ACT_DIM + OBS_DIM, 16, 16, ACT_DIM]))),
        "prior_scale": randomise(ConditionalGaussianScale(MLP([OBS_DIM, 16, 16, ACT_DIM], init="zero"), 0.5, -2.0), scale=1.0),
        "tanh": TanhSquash(),
    }


@pytest.mark.parametrize("name", ["coupling", "coupling_flipped", "prior_scale", "tanh"])
def test_inverse_undoes_forward(name):
    layer = make_layers()[name].eval()
    x = torch.randn(64, ACT_DIM, dtype=torch.float64)
    obs = torch.randn(64, OBS_DIM, dtype=torch.float64)
    layer = layer.double()
    y, log_det = layer.forward(x, obs)
    x_back, log_det_inv = layer.inverse(y, obs)
    assert torch.allclose(x_back, x, atol=1e-8)
    assert torch.allclose(log_det, -log_det_inv, atol=1e-8)


@pytest.mark.parametrize("name", ["coupling", "coupling_flipped", "prior_scale", "tanh"])
def test_log_det_matches_autograd_jacobian(name):
    layer = make_layers()[name].eval().double()
    obs = torch.randn(OBS_DIM, dtype=torch.float64)
    for _ in range(5):
        x = torch.randn(ACT_DIM, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v: layer.forward(v[None], obs[None])[0][0], x)
        expected = torch.linalg.slogdet(jac).logabsdet
        _, log_det = layer.forward(x[None], obs[None])
        assert torch.allclose(log_det[0], expected, atol=1e-8)
        # and the inverse direction, at y = f(x)
        y = layer.forward(x[None], obs[None])[0][0].detach()
        jac_inv = torch.autograd.functional.jacobian(lambda v: layer.inverse(v[None], obs[None])[0][0], y)
        _, log_det_inv = layer.inverse(y[None], obs[None])
        assert torch.allclose(log_det_inv[0], torch.linalg.slogdet(jac_inv).logabsdet, atol=1e-6)


def test_additive_coupling_leaves_masked_half_and_is_volume_preserving():
    layer = make_layers()["coupling"].eval()
    x, obs = torch.randn(32, ACT_DIM), torch.randn(32, OBS_DIM)
    y, log_det = layer(x, obs)
    assert torch.equal(y[:, [0, 2]], x[:, [0, 2]])
    assert not torch.allclose(y[:, 1], x[:, 1])
    assert torch.equal(log_det, torch.zeros(32))


def test_prior_log_std_stays_in_bounds():
    layer = make_layers()["prior_scale"]
    log_std = layer.log_std(100 * torch.randn(1000, OBS_DIM))
    assert log_std.min() >= -2.0 and log_std.max() <= 0.5
    assert log_std.max() - log_std.min() > 1.0  # the randomised net really moves it


def test_tanh_inverse_clips_the_boundary():
    z, log_det = TanhSquash().inverse(torch.tensor([[-1.0, 1.0, 0.0]]))
    assert torch.isfinite(z).all() and torch.isfinite(log_det).all()
    assert z[0, 0] < -5 and z[0, 1] > 5


def test_tanh_forward_log_det_is_stable_for_large_inputs():
    _, log_det = TanhSquash().forward(torch.tensor([[30.0, -30.0, 0.0]]))
    assert torch.isfinite(log_det).all()
    assert torch.allclose(log_det, torch.tensor([2 * (torch.log(torch.tensor(2.0)) - 30.0) * 2]), atol=1e-4)


def test_mlp_zero_init_starts_constant_but_learns():
    net = MLP([4, 8, 8, 1], init="zero")
    x = torch.randn(16, 4)
    out = net(x)
    assert torch.allclose(out, out[0].expand_as(out))  # state-independent at init
    (out - 1.0).pow(2).sum().backward()
    assert net.net[-1].weight.grad.abs().sum() > 0  # the biases keep activations alive, so weights get gradients


def test_mlp_rejects_unknown_init():
    with pytest.raises(ValueError, match="init"):
        MLP([2, 4, 1], init="xavier")


def test_swish_has_one_beta_per_unit():
    swish = Swish(7)
    assert swish.beta.shape == (7,)
    x = torch.randn(3, 7)
    assert torch.allclose(swish(x), x * torch.sigmoid(x))


def test_reward_shift_gives_two_columns_from_two_nets():
    shift = randomise(RewardShift(OBS_DIM, hidden=32))
    out = shift(torch.randn(10, OBS_DIM))
    assert out.shape == (10, 2)
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_dropout_drops_a_fraction_p_and_rescales_the_rest():
    torch.manual_seed(0)
    layer = Dropout(0.1)
    x = torch.rand(400, 500) + 0.5  # no zeros of its own
    y = layer(x)
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - 0.1) < 4 * (0.1 * 0.9 / x.numel()) ** 0.5  # 4 standard errors
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.9)
    assert torch.equal(layer.eval()(x), x)


def test_dropout_gradient_flows_through_the_kept_units_only():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    y = Dropout(0.3)(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    kept = y.detach() != 0
    assert torch.allclose(grad[kept], torch.full_like(grad[kept], 1 / 0.7)) and torch.all(grad[~kept] == 0)


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_dropout_rejects_a_probability_outside_zero_one(p):
    with pytest.raises(ValueError):
        Dropout(p)
