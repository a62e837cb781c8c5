"""tGlassMLP network: sizes, shapes, the attention layer of Eqs. (5)-(7), determinism, gradients, config, and the
factorised many-levels evaluation (LevelBatchedForward) against the plain forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tglassmlp.model import NetworkInternals, TGlassMLP, parameter_count, state_features
from tglassmlp.model.network import LevelBatchedForward
from tglassmlp.paths import config_dir

torch.set_num_threads(1)

#: float32 forward passes compared with a float64 numpy evaluation of the same equations
FLOAT32_RTOL = 1e-5
FLOAT32_ATOL = 1e-5
#: identical computations must agree bit for bit
EXACT = dict(rtol=0.0, atol=0.0)
#: the same float32 computation batched differently (BLAS takes other summation orders)
REORDERED = dict(rtol=1e-5, atol=1e-6)

M_SMALL = 12  # descriptors in the small test networks (the paper has 172)
N_SMALL = 20  # particles per structure in the small tests


def small_net(seed: int = 0, **kwargs) -> TGlassMLP:
    return TGlassMLP(n_descriptors=M_SMALL, seed=seed, **kwargs)


def random_inputs(batch: int | None = 3, n: int = N_SMALL, m: int = M_SMALL, seed: int = 1):
    """Standard-normal descriptors and state points in the paper's range (T in [0.15, 0.4], c in (0, 1))."""
    g = torch.Generator().manual_seed(seed)
    if batch is None:
        return torch.randn(n, m, generator=g), torch.tensor(0.25), torch.tensor(0.6)
    s = torch.randn(batch, n, m, generator=g)
    t = 0.15 + 0.25 * torch.rand(batch, generator=g)
    c = 0.05 + 0.9 * torch.rand(batch, generator=g)
    return s, t, c


def test_parameter_count_paper_sizes():
    """Trainable parameters for M_S = 172 (a dense layer a -> b has a*b weights + b biases):

    MLP1      6 -> 6 -> 6 -> 2:  (6*6 + 6) + (6*6 + 6) + (6*2 + 2)          =   42 +  42 +  14 =   98
    attention f_1..f_4 per descriptor, Eq. (5):  4 * 172                                         =  688
    bottleneck 172 -> 2:  172*2 + 2                                                              =  346
    MLP2      6 -> 7 -> 7 -> 4:  (6*7 + 7) + (7*7 + 7) + (7*4 + 4)          =   49 +  56 +  32 =  137
    head (2 + 4) -> 10 -> 10 -> 1:  (6*10 + 10) + (10*10 + 10) + (10*1 + 1) =   70 + 110 +  11 =  191
    total                                                                   98 + 688 + 346 + 137 + 191 = 1460

    The 688 attention parameters match the paper's Sec. II C; the paper's "slightly above 1000" in total
    (Sec. II E) is looser than this count.
    """
    net = TGlassMLP()
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert n_trainable == 1460
    assert parameter_count(172) == 1460
    assert net.attention.f.numel() == 688
    # the closed form follows the architecture for other sizes too
    other = dict(n_descriptors=30, mlp1_hidden=(5,), mlp2_hidden=(3, 4, 5), head_hidden=(8,), n_bottleneck=3)
    assert parameter_count(**other) == sum(p.numel() for p in TGlassMLP(**other).parameters())


def test_state_features():
    t = torch.tensor([0.25, 0.4], dtype=torch.float64)
    c = torch.tensor([0.5, 0.8], dtype=torch.float64)
    expected = np.array([[4.0, 16.0, 64.0, 0.5, 0.25, 0.125], [2.5, 6.25, 15.625, 0.8, 0.64, 0.512]])
    np.testing.assert_allclose(state_features(t, c).numpy(), expected, rtol=1e-15)


@pytest.mark.parametrize(
    "s_shape, t_shape, out_shape",
    [
        ((N_SMALL, M_SMALL), (), (N_SMALL,)),  # one structure, one state point
        ((3, N_SMALL, M_SMALL), (3,), (3, N_SMALL)),  # B structures at B state points
        ((N_SMALL, M_SMALL), (3,), (3, N_SMALL)),  # one structure at B state points
        ((3, N_SMALL, M_SMALL), (), (3, N_SMALL)),  # B structures at one state point
        ((1, N_SMALL, M_SMALL), (3,), (3, N_SMALL)),  # batch axis of length 1 broadcasts
    ],
)
def test_output_shapes(s_shape, t_shape, out_shape):
    net = small_net()
    s = torch.randn(*s_shape)
    t = torch.full(t_shape, 0.3)
    c = torch.full(t_shape, 0.7)
    assert net(s, t, c).shape == out_shape
    # plain Python scalars are accepted as well
    if t_shape == ():
        assert net(s, 0.3, 0.7).shape == out_shape


def test_broadcast_equals_explicit_batch():
    """One structure at B state points gives the same as the structure repeated B times."""
    net = small_net()
    s, t, c = random_inputs(batch=3)
    one = s[0]
    torch.testing.assert_close(net(one, t, c), net(one.expand(3, -1, -1), t, c), **REORDERED)
    torch.testing.assert_close(net(one, t[1], c[1]), net(one[None], t, c)[1], **REORDERED)


def test_bad_shapes_are_refused():
    net = small_net()
    with pytest.raises(ValueError, match="descriptors"):
        net(torch.randn(N_SMALL, M_SMALL + 1), 0.3, 0.5)
    with pytest.raises(ValueError, match="batch sizes"):
        net(torch.randn(3, N_SMALL, M_SMALL), torch.full((2,), 0.3), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="scalars or"):
        net(torch.randn(N_SMALL, M_SMALL), torch.full((2, 1), 0.3), 0.5)


def test_internals_shapes_and_normalisation():
    net = small_net()
    s, t, c = random_inputs(batch=3)
    out = net(s, t, c, return_internals=True)
    assert isinstance(out, NetworkInternals)
    assert out.propensity.shape == (3, N_SMALL)
    assert out.attention_weights.shape == (3, N_SMALL, M_SMALL)
    assert out.attention_logits.shape == (3, N_SMALL, M_SMALL)
    assert out.bottleneck.shape == (3, N_SMALL, 2)
    assert out.mlp1_out.shape == (3, 2)
    assert out.mlp2_out.shape == (3, 4)
    assert out.mean_attention_weights.shape == (3, M_SMALL)
    # softmax over descriptors (Eq. 6): positive and normalised per particle and on particle average
    assert torch.all(out.attention_weights > 0)
    torch.testing.assert_close(out.attention_weights.sum(-1), torch.ones(3, N_SMALL))
    torch.testing.assert_close(out.mean_attention_weights.sum(-1), torch.ones(3))
    torch.testing.assert_close(out.propensity, net(s, t, c), **EXACT)
    # unbatched call: no leading axis
    one = net(s[0], t[0], c[0], return_internals=True)
    assert one.attention_weights.shape == (N_SMALL, M_SMALL)
    assert one.bottleneck.shape == (N_SMALL, 2)
    assert one.mlp1_out.shape == (2,)
    torch.testing.assert_close(one.attention_weights, out.attention_weights[0], **REORDERED)


def test_attention_weights_depend_on_state_point_and_particle():
    net = small_net()
    s, _, _ = random_inputs(batch=1)
    w = net(s[0], torch.tensor([0.21, 0.4]), torch.tensor([0.8, 0.8]), return_internals=True).attention_weights
    assert not torch.allclose(w[0], w[1])  # temperature changes the weights (through MLP1)
    assert not torch.allclose(w[0, 0], w[0, 1])  # and so does the particle's own S^k (Eq. 5)


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _dense(layer, x):
    return x @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()


def _numpy_forward(net: TGlassMLP, s: np.ndarray, t: float, c: float):
    """Direct float64 evaluation of App. B and Eqs. (5)-(7) for one structure (N, M) at one state point."""
    x = np.array([1 / t, 1 / t**2, 1 / t**3, c, c**2, c**3])

    def mlp(seq, v):
        layers = [m for m in seq if isinstance(m, torch.nn.Linear)]
        for layer in layers[:-1]:
            v = _elu(_dense(layer, v))
        return _dense(layers[-1], v)

    m1 = mlp(net.mlp1, x)
    f = net.attention.f.detach().double().numpy()
    logits = s * f[0] + m1[0] * f[1] + m1[1] * f[2] + f[3]  # Eq. (5), broadcast over particles
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)  # Eq. (6)
    b = _elu(_dense(net.bottleneck[0], s * w))  # Eq. (7), then Dense(2, ELU)
    m2 = mlp(net.mlp2, x)
    h = np.concatenate([b, np.broadcast_to(m2, (s.shape[0], m2.size))], axis=1)
    return mlp(net.head, h)[:, 0], w, b


def test_forward_matches_direct_numpy_evaluation():
    net = small_net(seed=5)
    s, t, c = random_inputs(batch=2, seed=7)
    out = net(s, t, c, return_internals=True)
    for i in range(2):
        y, w, b = _numpy_forward(net, s[i].double().numpy(), float(t[i]), float(c[i]))
        np.testing.assert_allclose(out.propensity[i].detach().numpy(), y, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
        np.testing.assert_allclose(out.attention_weights[i].detach().numpy(), w, rtol=FLOAT32_RTOL,
                                   atol=FLOAT32_ATOL)
        np.testing.assert_allclose(out.bottleneck[i].detach().numpy(), b, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_deterministic_given_seed():
    s, t, c = random_inputs()
    a, b, other = small_net(seed=11), small_net(seed=11), small_net(seed=12)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, **EXACT)
    torch.testing.assert_close(a(s, t, c), b(s, t, c), **EXACT)
    assert not torch.allclose(a(s, t, c), other(s, t, c))
    # a private generator: building a seeded network does not move the global RNG
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    small_net(seed=4)
    torch.testing.assert_close(torch.rand(3), expected, **EXACT)
    # without a seed, the global RNG decides
    torch.manual_seed(21)
    u = TGlassMLP(n_descriptors=M_SMALL)
    torch.manual_seed(21)
    v = TGlassMLP(n_descriptors=M_SMALL)
    torch.testing.assert_close(u(s, t, c), v(s, t, c), **EXACT)


def test_keras_like_initialisation():
    net = small_net(seed=2)
    for module in net.modules():
        if isinstance(module, torch.nn.Linear):
            assert torch.all(module.bias == 0)
            bound = np.sqrt(6.0 / (module.in_features + module.out_features))  # Glorot uniform
            assert module.weight.abs().max() <= bound
    assert net.attention.f.abs().max() <= np.sqrt(3.0 / M_SMALL)


def test_gradients_reach_every_parameter():
    net = small_net(seed=3)
    s, t, c = random_inputs()
    target = torch.rand(3, N_SMALL, generator=torch.Generator().manual_seed(0))
    loss = ((net(s, t, c) - target) ** 2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_state_normalization():
    net = small_net()
    s, t, c = random_inputs()
    before = net(s, t, c)
    temps = torch.tensor([0.21, 0.23, 0.25, 0.3, 0.4])
    levels = torch.tensor([0.99, 0.8, 0.5, 0.25, 0.075])
    net.set_state_normalization(temps, levels)
    x = (state_features(temps, levels) - net.state_mean) / net.state_std
    torch.testing.assert_close(x.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(6), atol=1e-5, rtol=0)
    assert not torch.allclose(net(s, t, c), before)
    # the buffers travel with the weights
    clone = small_net(seed=99)
    clone.load_state_dict(net.state_dict())
    torch.testing.assert_close(clone(s, t, c), net(s, t, c), **EXACT)


def test_activation_options():
    s, t, c = random_inputs()
    assert small_net(activation="tanh", bottleneck_activation="linear")(s, t, c).shape == (3, N_SMALL)
    with pytest.raises(ValueError, match="unknown activation"):
        small_net(activation="nope")


def test_config_instantiates_paper_network():
    cfg = OmegaConf.load(config_dir() / "model" / "tglassmlp.yaml").network
    net = instantiate(cfg)
    assert isinstance(net, TGlassMLP)
    assert sum(p.numel() for p in net.parameters()) == parameter_count(cfg.n_descriptors) == 1460
    s = torch.randn(5, cfg.n_descriptors)
    assert net(s, 0.3, 0.5).shape == (5,)


def test_factorised_attention_equals_the_network():
    """LevelBatchedForward against TGlassMLP.forward: a random network with state normalisation, chunks of
    uneven size, several temperatures; and descriptors so large that exp underflows for some particles (those
    rows go through the plain forward pass)."""
    net = TGlassMLP(n_descriptors=30, seed=3).eval()
    net.set_state_normalization([0.6, 0.5, 0.45, 0.6], [0.9, 0.8, 0.5, 0.5])
    with torch.no_grad():
        net.attention.f.mul_(3.0)  # sharper softmax than at initialisation
        net.attention.f[1:-1].mul_(100.0)  # state term spread ~1e2 over k
    feats = torch.randn(250, 30, generator=torch.Generator().manual_seed(0))
    # logits S f_1 of +-1e3: where the particle factor and the state factor peak at different k, their
    # product underflows at every k (the normaliser is 0 in float32)
    feats[::7] *= 400.0
    levels = torch.tensor([0.95, 0.7, 0.3, 0.05])
    fast = LevelBatchedForward(net, feats, chunk_size=64)
    assert fast.n_blocks == 4
    fallback = []
    handle = net.register_forward_hook(lambda mod, inp, out: fallback.append(out.shape[-1]))
    try:
        for temperature in (0.6, 0.35, 0.2):
            got = torch.cat([fast.block(i, temperature, levels) for i in range(fast.n_blocks)], dim=1).numpy()
            with torch.no_grad():
                want = net(feats, temperature, levels).numpy()
            fallback.pop()  # the reference call itself
            normal = np.arange(250) % 7 != 0
            np.testing.assert_allclose(got[:, normal], want[:, normal], atol=5e-6, rtol=1e-5)
            # |S| ~ 400: float32 rounding of S w differs between the two summation orders at ~1e-7 relative
            np.testing.assert_allclose(got[:, ~normal], want[:, ~normal], atol=1e-4)
    finally:
        handle.remove()
    assert fallback and sum(fallback) < 250  # some particles, never a whole block, took the plain pass
    assert LevelBatchedForward.supports(net) and not LevelBatchedForward.supports(torch.nn.Linear(30, 1))
