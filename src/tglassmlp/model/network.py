"""The tGlassMLP network (Jung, Biroli, Berthier, PRB 109, 064205 (2024), Sec. II C-D and App. B).

Data flow for one particle with standardised structural descriptors S = (S^1 .. S^{M_S}) at the state
point (T, c = <C_B(t)>):

    x      = (1/T, 1/T^2, 1/T^3, c, c^2, c^3)                       state-point features (App. B)
    m1     = MLP1(x)           6 -> 6 (ELU) -> 6 (ELU) -> 2 (linear)                       (App. B)
    A^k    = S^k f_1^k + m1^1 f_2^k + m1^2 f_3^k + f_4^k,  k = 1..M_S                         Eq. (5)
    w_k    = softmax_k(A^1 .. A^{M_S})                                                        Eq. (6)
    S_out  = S^k w_k                                                                          Eq. (7)
    b      = ELU(W_b S_out + b_b)                       2-node bottleneck (Sec. II D; GlassMLP Dense(2, ELU))
    m2     = MLP2(x)           6 -> 7 (ELU) -> 7 (ELU) -> 4 (linear)                       (App. B)
    X_MLP  = head([b, m2])     6 -> 10 (ELU) -> 10 (ELU) -> 1 (linear)             (Sec. II D, App. B)

Reading of the attention layer (Eqs. 5-7). The softmax in Eq. (6) runs over the descriptor index k, so the
weights are normalised, sum_k w_k = 1. Because A^k contains S^k (the particle's own descriptor value), the
weights depend on the particle as well as on the state point; the state point enters only through the two
MLP1 outputs, which are shared by all particles and all descriptors and are mixed per descriptor by
f_2^k and f_3^k. The paper's Sec. VI A analyses "the particle-averaged weight of each descriptor", which
confirms that w_k is per particle; :class:`NetworkInternals` therefore returns the per-particle weights and
their particle average. There are 4 M_S attention parameters (688 for M_S = 172, as the paper states).
:class:`LevelBatchedForward` evaluates the same equations for one set of particles at many state points with the
softmax factorised into a particle part and a state part (used by prediction, ``tglassmlp.predict``).

Choices the paper leaves open (documented here, configurable in the constructor):
- Dense layers are initialised like Keras defaults (the authors' GlassMLP was a Keras model): Glorot
  uniform weights, zero biases. The attention parameters f_n^k are drawn uniformly in +-sqrt(3 / M_S)
  (Glorot uniform for a length-M_S vector), so that the initial logits A^k are O(1) and the softmax starts
  close to, but not exactly at, uniform weights.
- The bottleneck activation is ELU (GlassMLP's Dense(2, ELU); the tGlassMLP paper does not restate it).
- The state-point features can be standardised by fixed buffers (``state_mean``, ``state_std``, identity by
  default = the paper's plain features). 1/T^3 ranges from ~16 at T = 0.4 to ~300 at T = 0.15, so a trainer
  may want to call :meth:`TGlassMLP.set_state_normalization` with the training state points; the buffers
  are saved in the ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: The paper's sizes (App. B and Sec. II B). M_S = 172 is the paper's number; our kept-column rule
#: (observables.descriptors.kept_columns) leaves 162 of the 176 columns on type-0 particles: no rule found gives 172
PAPER_N_DESCRIPTORS = 172
PAPER_MLP1_HIDDEN = (6, 6)
PAPER_MLP1_OUT = 2
PAPER_MLP2_HIDDEN = (7, 7)
PAPER_MLP2_OUT = 4
PAPER_BOTTLENECK = 2
PAPER_HEAD_HIDDEN = (10, 10)

#: Number of state-point features fed to MLP1 and MLP2: (1/T, 1/T^2, 1/T^3, c, c^2, c^3)
N_STATE_FEATURES = 6

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
    "linear": nn.Identity,
}


def make_activation(activation: str | Callable[[], nn.Module]) -> nn.Module:
    """An activation module from a name ('elu', 'relu', 'tanh', 'gelu', 'silu', 'linear') or a factory."""
    if isinstance(activation, str):
        try:
            return _ACTIVATIONS[activation.lower()]()
        except KeyError:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(_ACTIVATIONS)}") from None
    return activation()


def state_features(temperature: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """The transformed state point of App. B.

    Args:
        temperature: (B,) temperatures T [epsilon / k_B], positive.
        level: (B,) average propensities c = <C_B(t)> in [0, 1] (dimensionless; stands for the time).

    Returns:
        (B, 6) tensor (1/T, 1/T^2, 1/T^3, c, c^2, c^3).
    """
    beta = 1.0 / temperature
    return torch.stack([beta, beta**2, beta**3, level, level**2, level**3], dim=-1)


def _mlp(n_in: int, hidden: Sequence[int], n_out: int, activation) -> nn.Sequential:
    """Dense layers n_in -> hidden[0] -> ... -> n_out, ``activation`` after each hidden layer, linear output."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, int(h)), make_activation(activation)]
        width = int(h)
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


@dataclass
class NetworkInternals:
    """Intermediate values of one forward pass, for analysis (paper Sec. VI).

    Shapes are given for batched input; for unbatched input (descriptors (N, M_S), scalar T and c) the
    leading B axis is absent.

    Attributes:
        propensity: (B, N) predicted propensity X_MLP^i (dimensionless, ~[0, 1]).
        attention_weights: (B, N, M_S) softmax weights w_k of Eq. (6), per particle; sum over k is 1.
        attention_logits: (B, N, M_S) the A^k of Eq. (5).
        bottleneck: (B, N, n_bottleneck) bottleneck activations (Figs. 10, 11).
        mlp1_out: (B, 2) MLP1 output per state point.
        mlp2_out: (B, 4) MLP2 output per state point.
    """

    propensity: torch.Tensor
    attention_weights: torch.Tensor
    attention_logits: torch.Tensor
    bottleneck: torch.Tensor
    mlp1_out: torch.Tensor
    mlp2_out: torch.Tensor

    @property
    def mean_attention_weights(self) -> torch.Tensor:
        """(B, M_S) particle-averaged attention weights (Sec. VI A, the input of P_int(L)); sum over k is 1."""
        return self.attention_weights.mean(dim=-2)


class StateAttention(nn.Module):
    """Attention layer of Eqs. (5)-(7): state-dependent softmax reweighting of the M_S descriptors.

    Parameters: ``f`` of shape (n_mlp1_out + 2, M_S); row 0 = f_1 (multiplies S^k), rows 1..n_mlp1_out =
    f_2, f_3 (multiply the MLP1 outputs), last row = f_4 (constant). For the paper's n_mlp1_out = 2 this is
    4 M_S parameters.
    """

    def __init__(self, n_descriptors: int, n_state: int = PAPER_MLP1_OUT):
        super().__init__()
        self.n_descriptors = int(n_descriptors)
        self.n_state = int(n_state)
        self.f = nn.Parameter(torch.empty(self.n_state + 2, self.n_descriptors))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform in +-sqrt(3 / M_S): Glorot uniform for a vector of length M_S (fan_in = fan_out = M_S)."""
        bound = math.sqrt(3.0 / self.n_descriptors)
        with torch.no_grad():
            self.f.uniform_(-bound, bound, generator=generator)

    def logits(self, descriptors: torch.Tensor, mlp1_out: torch.Tensor) -> torch.Tensor:
        """A^k of Eq. (5).

        Args:
            descriptors: (B, N, M_S) standardised descriptors S^k.
            mlp1_out: (B, n_state) MLP1 output, one row per state point.

        Returns:
            (B, N, M_S) logits.
        """
        f_s, f_state, f_bias = self.f[0], self.f[1:-1], self.f[-1]
        state_term = mlp1_out @ f_state  # (B, M_S): sum_n MLP1_out^n f_{n+1}^k, shared by all particles
        return descriptors * f_s + state_term[:, None, :] + f_bias

    def forward(self, descriptors: torch.Tensor, mlp1_out: torch.Tensor):
        """Returns (S_out (B, N, M_S) of Eq. (7), w (B, N, M_S) of Eq. (6), A (B, N, M_S) of Eq. (5))."""
        a = self.logits(descriptors, mlp1_out)
        w = torch.softmax(a, dim=-1)
        return descriptors * w, w, a


class TGlassMLP(nn.Module):
    """Transferable GlassMLP: per-particle propensity from structural descriptors and a state point (T, c).

    Args:
        n_descriptors: M_S, the number of (standardised) structural descriptors per particle.
        mlp1_hidden: widths of MLP1's hidden layers (paper: 6, 6).
        mlp1_out: MLP1 output size, i.e. the number of state channels of the attention layer (paper: 2).
        mlp2_hidden: widths of MLP2's hidden layers (paper: 7, 7).
        mlp2_out: MLP2 output size (paper: 4).
        n_bottleneck: bottleneck width (paper: 2).
        head_hidden: widths of the hidden layers after the concatenation [bottleneck, MLP2] (paper: 10, 10).
        activation: hidden-layer activation of MLP1, MLP2 and the head (paper: ELU).
        bottleneck_activation: activation of the bottleneck layer (GlassMLP: ELU).
        seed: if given, parameters are initialised from a private generator seeded with it (the global
            torch RNG is not touched); otherwise from the global RNG.
    """

    def __init__(
        self,
        n_descriptors: int = PAPER_N_DESCRIPTORS,
        mlp1_hidden: Sequence[int] = PAPER_MLP1_HIDDEN,
        mlp1_out: int = PAPER_MLP1_OUT,
        mlp2_hidden: Sequence[int] = PAPER_MLP2_HIDDEN,
        mlp2_out: int = PAPER_MLP2_OUT,
        n_bottleneck: int = PAPER_BOTTLENECK,
        head_hidden: Sequence[int] = PAPER_HEAD_HIDDEN,
        activation: str | Callable[[], nn.Module] = "elu",
        bottleneck_activation: str | Callable[[], nn.Module] = "elu",
        seed: int | None = None,
    ):
        super().__init__()
        if n_descriptors < 1:
            raise ValueError(f"n_descriptors must be positive, got {n_descriptors}")
        self.n_descriptors = int(n_descriptors)
        # nn.Linear draws its own default initialisation from the global RNG; with a seed that draw is
        # discarded (reset_parameters below), so it runs in a forked RNG to leave the caller's stream alone.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            self.mlp1 = _mlp(N_STATE_FEATURES, tuple(mlp1_hidden), int(mlp1_out), activation)
            self.attention = StateAttention(self.n_descriptors, int(mlp1_out))
            self.bottleneck = nn.Sequential(
                nn.Linear(self.n_descriptors, int(n_bottleneck)), make_activation(bottleneck_activation)
            )
            self.mlp2 = _mlp(N_STATE_FEATURES, tuple(mlp2_hidden), int(mlp2_out), activation)
            self.head = _mlp(int(n_bottleneck) + int(mlp2_out), tuple(head_hidden), 1, activation)
        # Fixed affine transform of the state features (identity = the paper); saved with the weights.
        self.register_buffer("state_mean", torch.zeros(N_STATE_FEATURES))
        self.register_buffer("state_std", torch.ones(N_STATE_FEATURES))
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int | None = None) -> None:
        """Keras-like initialisation: Glorot-uniform dense weights, zero biases; see module docstring."""
        gen = None
        if seed is not None:
            gen = torch.Generator().manual_seed(int(seed))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=gen)
                nn.init.zeros_(module.bias)
        self.attention.reset_parameters(gen)

    @torch.no_grad()
    def set_state_normalization(self, temperature, level) -> None:
        """Standardise the six state features with the mean and std over the given training state points.

        Args:
            temperature: (P,) training temperatures.
            level: (P,) training levels <C_B>. Features with zero spread keep std 1.
        """
        t = torch.as_tensor(temperature, dtype=self.state_mean.dtype).reshape(-1)
        c = torch.as_tensor(level, dtype=self.state_mean.dtype).reshape(-1)
        x = state_features(t, c)
        std = x.std(dim=0, unbiased=False)
        self.state_mean.copy_(x.mean(dim=0))
        self.state_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def _prepare(self, descriptors, temperature, level):
        """Broadcast to descriptors (B, N, M_S) and state points (B,); report whether input was batched."""
        param = self.attention.f
        s = torch.as_tensor(descriptors, dtype=param.dtype, device=param.device)
        t = torch.as_tensor(temperature, dtype=param.dtype, device=param.device)
        c = torch.as_tensor(level, dtype=param.dtype, device=param.device)
        if s.ndim not in (2, 3) or s.shape[-1] != self.n_descriptors:
            raise ValueError(f"descriptors must be (N, {self.n_descriptors}) or (B, N, {self.n_descriptors}), "
                             f"got {tuple(s.shape)}")
        if t.ndim > 1 or c.ndim > 1:
            raise ValueError(f"temperature and level must be scalars or (B,), got {tuple(t.shape)}, {tuple(c.shape)}")
        batched = s.ndim == 3 or t.ndim == 1 or c.ndim == 1
        if s.ndim == 2:
            s = s[None]
        n_batch = max(s.shape[0], t.reshape(-1).shape[0], c.reshape(-1).shape[0])
        try:
            s = s.expand(n_batch, -1, -1)
            t = t.reshape(-1).expand(n_batch)
            c = c.reshape(-1).expand(n_batch)
        except RuntimeError:
            raise ValueError(f"batch sizes disagree: descriptors {tuple(s.shape)}, temperature "
                             f"{tuple(t.shape)}, level {tuple(c.shape)}") from None
        return s, t, c, batched

    def forward(self, descriptors, temperature, level, return_internals: bool = False):
        """Predicted propensity.

        Args:
            descriptors: (B, N, M_S) or (N, M_S) standardised structural descriptors.
            temperature: (B,) or scalar temperature T [epsilon / k_B].
            level: (B,) or scalar <C_B(t)>, the time encoded as the average propensity.
            return_internals: return a :class:`NetworkInternals` instead of the propensity alone.

        A batch axis of length 1 on either side broadcasts (one structure at B state points, or B structures
        at one state point).

        Returns:
            (B, N) propensity if any input has a batch axis, else (N,); or the internals.
        """
        s, t, c, batched = self._prepare(descriptors, temperature, level)
        x = (state_features(t, c) - self.state_mean) / self.state_std  # (B, 6)
        m1 = self.mlp1(x)  # (B, 2)
        s_out, w, a = self.attention(s, m1)  # (B, N, M_S) each
        b = self.bottleneck(s_out)  # (B, N, 2)
        m2 = self.mlp2(x)  # (B, 4)
        h = torch.cat([b, m2[:, None, :].expand(-1, b.shape[1], -1)], dim=-1)
        y = self.head(h).squeeze(-1)  # (B, N)
        if not batched:
            y, w, a, b, m1, m2 = (v[0] for v in (y, w, a, b, m1, m2))
        if return_internals:
            return NetworkInternals(propensity=y, attention_weights=w, attention_logits=a, bottleneck=b,
                                    mlp1_out=m1, mlp2_out=m2)
        return y



class LevelBatchedForward:
    """TGlassMLP on one fixed set of particles at many state points: the numbers of ``TGlassMLP.forward``, faster.

    The attention logits of Eq. (5) split into a particle part and a state part, so the weights of Eq. (6) factorise,

        exp(A^k) = E^k u^k,   E^k = exp(S^k f_1^k + f_4^k)   (particle only),
                              u^k = exp(sum_n m1^n f_{n+1}^k)  (state point only).

    Per particle, the softmax normaliser sum_k E^k u^k and the bottleneck pre-activations of Eq. (7),
    sum_k W_jk S^k w_k, are then dot products of the per-particle vectors (E, S E W_1, ..., S E W_nb) with u:
    one (n, 1 + nb, M) x (M, A) product per chunk of n particles instead of elementwise work on (A, n, M)
    tensors (at M = 172 and 11 levels 6x fewer CPU seconds, measured). MLP1, MLP2, the bottleneck activation
    and the head are the network's own modules. Both factors are divided by their maximum over k (exact in the
    ratio); particles whose normaliser would underflow (< ``UNDERFLOW``) are evaluated by ``network.forward``.

    Args:
        network: a :class:`TGlassMLP` (eval mode) with a Linear + activation bottleneck (:meth:`supports`).
        features: (N_0, M_S) float32 standardised descriptors.
        chunk_size: particles per block; memory (1 + nb) x N_0 x M_S x 4 bytes for the per-particle vectors.
    """

    UNDERFLOW = 1e-30

    def __init__(self, network: TGlassMLP, features: torch.Tensor, chunk_size: int = 2048):
        self.network = network
        self.features = features
        self.chunk_size = max(1, int(chunk_size))
        att, bottleneck = network.attention, network.bottleneck
        with torch.inference_mode():
            f1, f4 = att.f[0], att.f[-1]
            wb = bottleneck[0].weight  # (nb, M)
            self._blocks = []
            for start in range(0, features.shape[0], self.chunk_size):
                s = features[start:start + self.chunk_size]
                block = torch.empty((s.shape[0], 1 + wb.shape[0], s.shape[1]), dtype=s.dtype)  # (n, 1 + nb, M)
                e = block[:, 0]
                torch.addcmul(f4, s, f1, out=e)  # the particle part of Eq. (5), S^k f_1^k + f_4^k
                e.sub_(e.max(dim=1, keepdim=True).values).exp_()  # max 1 per particle
                se = s * e
                for j, w in enumerate(wb):
                    torch.mul(se, w, out=block[:, 1 + j])
                self._blocks.append(block)

    @property
    def n_blocks(self) -> int:
        """Number of particle blocks (ceil(N_0 / chunk_size))."""
        return len(self._blocks)

    @torch.inference_mode()
    def block(self, i: int, temperature: float, levels: torch.Tensor) -> torch.Tensor:
        """(A, n) propensity of block ``i`` (particles i * chunk_size ...) at T [epsilon/k_B] and the A levels c."""
        net = self.network
        c = torch.as_tensor(levels, dtype=self.features.dtype).reshape(-1)
        x = (state_features(torch.full_like(c, float(temperature)), c) - net.state_mean) / net.state_std
        m1 = net.mlp1(x)
        st = m1 @ net.attention.f[1:-1]  # (A, M): the state term of Eq. (5)
        u = torch.exp(st - st.max(dim=1, keepdim=True).values)
        r = torch.einsum("nqm,am->anq", self._blocks[i], u)  # (A, n, 1 + nb)
        norm = r[..., :1]
        b = net.bottleneck[1](r[..., 1:] / norm + net.bottleneck[0].bias)
        m2 = net.mlp2(x)
        y = net.head(torch.cat([b, m2[:, None, :].expand(-1, b.shape[1], -1)], dim=-1)).squeeze(-1)
        bad = ~(norm[..., 0] > self.UNDERFLOW).all(dim=0)
        if bad.any():  # extreme logits: let the plain forward pass handle its own softmax
            rows = torch.nonzero(bad).reshape(-1)
            start = i * self.chunk_size
            y[:, rows] = net(self.features[start + rows], float(temperature), c)
        return y

    @staticmethod
    def supports(network) -> bool:
        """Whether ``network`` has the TGlassMLP structure this evaluator relies on."""
        return (isinstance(network, TGlassMLP) and isinstance(network.bottleneck, nn.Sequential)
                and len(network.bottleneck) == 2 and isinstance(network.bottleneck[0], nn.Linear))


def _mlp_count(n_in: int, hidden: Sequence[int], n_out: int) -> int:
    widths = [n_in, *map(int, hidden), n_out]
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def parameter_count(
    n_descriptors: int = PAPER_N_DESCRIPTORS,
    mlp1_hidden: Sequence[int] = PAPER_MLP1_HIDDEN,
    mlp1_out: int = PAPER_MLP1_OUT,
    mlp2_hidden: Sequence[int] = PAPER_MLP2_HIDDEN,
    mlp2_out: int = PAPER_MLP2_OUT,
    n_bottleneck: int = PAPER_BOTTLENECK,
    head_hidden: Sequence[int] = PAPER_HEAD_HIDDEN,
) -> int:
    """Closed-form number of trainable parameters of :class:`TGlassMLP` (1460 for the paper's sizes).

    A dense layer a -> b has (a + 1) b parameters; the attention layer has (mlp1_out + 2) M_S.
    """
    return (
        _mlp_count(N_STATE_FEATURES, mlp1_hidden, mlp1_out)
        + (mlp1_out + 2) * n_descriptors
        + (n_descriptors + 1) * n_bottleneck
        + _mlp_count(N_STATE_FEATURES, mlp2_hidden, mlp2_out)
        + _mlp_count(n_bottleneck + mlp2_out, head_hidden, 1)
    )
