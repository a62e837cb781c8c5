"""Fused CPU training step of :class:`~tglassmlp.model.network.TGlassMLP`: forward, loss, gradient and Adam.

Why it exists: one training sample (the paper's batch: the N_0 = 600 type-0 particles of one structure at one
state point, 172 descriptors each) is about 1 MFLOP of arithmetic, but a torch step costs 2-4 ms on a CPU core,
almost all of it per-operator overhead (~150 small operators in forward, backward and Adam). The paper's
schedule is ~1e6 such optimiser steps, so overhead set the time of a network (55-67 min projected with the torch
step; 20 min measured with this kernel, benchmarks/results/training*.md). Here the equations of the network
(Eqs. 5-7, App. B), of the two losses (:mod:`tglassmlp.model.loss`) and their hand-derived gradients run in one
numba kernel per sample, followed by the Adam update in the same call.

The torch network stays the model. :meth:`FusedTrainingStep.pull` copies its parameters and the Adam moments
(torch.optim.Adam's state format) into flat arrays before a group of samples; :meth:`push` writes them back, so
checkpoints, validation, prediction and a later torch step see exactly this state. Numbers: the kernel works in
float64 on float32 inputs and parameters; loss, terms and gradients agree with torch autograd to float32
rounding, Adam trajectories with torch.optim.Adam (tests/test_fused_training.py).

Gradients (per sample; N particles, y the prediction, t the label):

* MSE: dL/dy_i = 2 (y_i - t_i) / N.
* GlassMLP loss: L1 gives sign(y_i - t_i) / (N std); L4 gives sign(V_y - V_t) / max(V_t, eps) 2 (y_i - ybar) / N;
  L2_k = |C_k^true - C_k| / norm with C_k = (dz.W_k dz / N) / D, D = max(dz.dz / N, eps), dz = z - zbar,
  z = 1 - y gives dC_k/d dz_j = ((W_k dz)_j + (W_k^T dz)_j) / (N D) - 2 C_k dz_j / (N D) (the second term only
  when D is not clamped), projected on zero mean (dz = z - zbar) and sign-flipped (z = 1 - y). One pass over
  W_k gives both W_k dz and W_k^T dz.
* Attention (per particle, softmax over k): with G_k = sum_j gb_j Wb_jk (gb the bottleneck pre-activation
  gradient), u_k = G_k S_k, dA_k = w_k (u_k - sum_q w_q u_q); then df1_k = sum_i dA_ik S_ik, df4_k = sum_i dA_ik,
  df_{n+1,k} = m1_n df4_k and dm1_n = sum_k f_{n+1,k} df4_k (the state term is shared by all particles).
* Dense layers and ELU (alpha = 1, ELU'(x) = 1 for x > 0, ELU(x) + 1 otherwise) the usual way.

Threads: particles are cut into a fixed number of chunks whose partial gradients are summed in chunk order,
so results do not depend on the number of threads.
"""

from __future__ import annotations

import math
import types

import numba
import numpy as np
import torch
from numba import prange
from torch import nn

from tglassmlp.model.loss import GlassMLPLoss
from tglassmlp.model.network import N_STATE_FEATURES, TGlassMLP

#: Particle chunks per sample (each with its own gradient accumulator); results are identical for any thread count
N_CHUNKS = 8
#: Loss kinds understood by the kernel
LOSS_CODES = {"mse": 0, "glassmlp": 1}


class FusedUnsupportedError(ValueError):
    """The network, loss or optimiser is not one the fused kernel implements (the torch path must be used)."""


# ------------------------------------------------------------------------------------------------ kernel parts
#: LLVM fast-math flags that allow vectorised reductions; without 'nnan'/'ninf', so inf and NaN keep their meaning
_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}

#: Arguments of the softmax exponentials are clamped here: exp(-88) ~ 6e-39 is below float32 resolution next to
#: the largest term (1), so clamped terms change no weight visibly
_EXP_FLOOR = -88.0


@numba.njit(cache=True, inline="always")
def _exp_nonpositive(x):
    """exp(x) for x <= 0 from arithmetic only, so that LLVM vectorises the softmax loop (libm's exp is a scalar
    call, ~70 % of the forward pass): exp(x) = (exp(x / 256))^256 with a degree-10 Taylor series on
    x / 256 in [-0.344, 0] (truncation 2e-13, times 256 after the squarings: ~6e-11 relative)."""
    r = max(x, _EXP_FLOOR) * (1.0 / 256.0)
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (
        1.0 / 720.0 + r * (1.0 / 5040.0 + r * (1.0 / 40320.0 + r * (1.0 / 362880.0 + r * (1.0 / 3628800.0))))))))))
    for _ in range(8):
        p = p * p
    return p


@numba.njit(cache=True, inline="always")
def _elu_slope(out):
    # derivative of ELU expressed by its output: 1 for x > 0, exp(x) = ELU(x) + 1 otherwise
    return 1.0 if out > 0.0 else out + 1.0


@numba.njit(cache=True, inline="always")
def _elu_select(x):
    # both branches evaluated, then selected: keeps the particle loop vectorisable (exp(x) - 1 instead of expm1
    # costs ~1e-16 absolute, irrelevant next to float32 inputs)
    e = _exp_nonpositive(min(x, 0.0)) - 1.0
    return x if x > 0.0 else e


@numba.njit(cache=True, fastmath=_FASTMATH)
def _dense_forward(theta, spec, act, i0, i1):
    """Dense layers ``spec`` (L, 4: weight offset, bias offset, n_in, n_out; ELU after all but the last) for rows
    i0..i1 at once (the row index innermost, so loops vectorise): the head over particles, MLP1/MLP2 over one row.
    act: (L + 1, width, R); act[0] holds the input rows, act[l + 1] receives layer l's output.
    1-D slices and a separate accumulator let LLVM vectorise (indexing rows of one 3-D array did not: 4x slower)."""
    n_layers = spec.shape[0]
    count = i1 - i0
    tmp = np.empty(count)
    for layer in range(n_layers):
        w_off, b_off, n_in, n_out = spec[layer, 0], spec[layer, 1], spec[layer, 2], spec[layer, 3]
        for o in range(n_out):
            bias = np.float64(theta[b_off + o])
            for i in range(count):
                tmp[i] = bias
            for q in range(n_in):
                wq = np.float64(theta[w_off + o * n_in + q])
                src = act[layer, q, i0:i1]
                for i in range(count):
                    tmp[i] += wq * src[i]
            dst = act[layer + 1, o, i0:i1]
            if layer < n_layers - 1:
                for i in range(count):
                    dst[i] = _elu_select(tmp[i])
            else:
                for i in range(count):
                    dst[i] = tmp[i]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _dense_backward(theta, spec, act, i0, i1, g, grad):
    """Back-propagate g[0, o, :count] (gradient of the last layer's output o for rows i0..i1) through ``spec``;
    adds parameter gradients to ``grad``. g: (2, width, >= count) work space. Returns r: g[r, q, :count] is the
    gradient of input q."""
    n_layers = spec.shape[0]
    count = i1 - i0
    cur = 0
    for layer in range(n_layers - 1, -1, -1):
        w_off, b_off, n_in, n_out = spec[layer, 0], spec[layer, 1], spec[layer, 2], spec[layer, 3]
        nxt = 1 - cur
        if layer < n_layers - 1:
            for o in range(n_out):
                go = g[cur, o, :count]
                out = act[layer + 1, o, i0:i1]
                for i in range(count):
                    go[i] *= _elu_slope(out[i])
        for q in range(n_in):
            gn = g[nxt, q, :count]
            for i in range(count):
                gn[i] = 0.0
        for o in range(n_out):
            go = g[cur, o, :count]
            gsum = 0.0
            for i in range(count):
                gsum += go[i]
            grad[b_off + o] += gsum
            for q in range(n_in):
                wq = np.float64(theta[w_off + o * n_in + q])
                src = act[layer, q, i0:i1]
                gn = g[nxt, q, :count]
                gw = 0.0
                for i in range(count):
                    gw += go[i] * src[i]
                for i in range(count):
                    gn[i] += wq * go[i]
                grad[w_off + o * n_in + q] += gw
        cur = nxt
    return cur


@numba.njit(cache=True, fastmath=_FASTMATH)
def _shell_products(weights, dz, v, u):
    """v_k = W_k dz and u_k = W_k^T dz for every shell k in one pass over W (K, N, N) float32."""
    n_shells, n = weights.shape[0], weights.shape[1]
    for k in range(n_shells):
        for j in range(n):
            u[k, j] = 0.0
        for i in range(n):
            s = 0.0
            di = dz[i]
            for j in range(n):
                wij = np.float64(weights[k, i, j])
                s += wij * dz[j]
                u[k, j] += wij * di
            v[k, i] = s


@numba.njit(cache=True)
def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


def _train_sample(theta, m_adam, v_adam, adam, x_state, features, target, weights, c_true, loss_code, loss_par,
                  corr_weights, spec1, spec2, spec_head, att, terms):
    """One sample: forward, loss, gradient, Adam update (in place on theta, m_adam, v_adam).

    theta, m_adam, v_adam: (P,) float32 flat parameters and Adam moments. adam: (step, lr, beta1, beta2, eps),
    step already incremented. x_state: (6,) standardised state features. features: (N, M) float32. target:
    (N,) float32. weights: (K, N, N) float32 row-normalised shells (unused for MSE). c_true: (K,) C_k of the
    labels. loss_par: (weight_mae, weight_variance, label_std, eps). corr_weights: (K,). spec1/spec2/spec_head:
    MLP layouts. att: (f offset, n_state, Wb offset, bb offset, n_bottleneck). terms: (2 + K,) out: total, then
    (mse) or (l1, l4, l2_1..l2_K).
    """
    n, m = features.shape
    n_par = theta.shape[0]
    f_off, n_state, wb_off, bb_off, nb = att[0], att[1], att[2], att[3], att[4]
    f4_off = f_off + (n_state + 1) * m

    # ---- state MLPs (one state point, shared by all particles)
    width1 = N_STATE_FEATURES
    for layer in range(spec1.shape[0]):
        width1 = max(width1, spec1[layer, 3])
    width2 = N_STATE_FEATURES
    for layer in range(spec2.shape[0]):
        width2 = max(width2, spec2[layer, 3])
    outs1 = np.zeros((spec1.shape[0] + 1, width1, 1))
    outs2 = np.zeros((spec2.shape[0] + 1, width2, 1))
    for q in range(N_STATE_FEATURES):
        outs1[0, q, 0] = x_state[q]
        outs2[0, q, 0] = x_state[q]
    _dense_forward(theta, spec1, outs1, 0, 1)
    _dense_forward(theta, spec2, outs2, 0, 1)
    m1 = outs1[spec1.shape[0], :n_state, 0]
    n2 = spec2[spec2.shape[0] - 1, 3]
    m2 = outs2[spec2.shape[0], :n2, 0]
    cst = np.empty(m)  # f_4^k + sum_n m1^n f_{n+1}^k: the state and bias part of the logits, Eq. (5)
    for k in range(m):
        cst_k = np.float64(theta[f4_off + k])
        for q in range(n_state):
            cst_k += m1[q] * theta[f_off + (q + 1) * m + k]
        cst[k] = cst_k

    n_head = spec_head.shape[0]
    head_width = nb + n2
    for layer in range(n_head):
        head_width = max(head_width, spec_head[layer, 3])
    w_att = np.empty((n, m))  # softmax weights w_k per particle
    b_out = np.empty((n, nb))  # bottleneck outputs
    act = np.empty((n_head + 1, head_width, n))  # head input ([bottleneck, MLP2]) and layer outputs, particle last
    y = np.empty(n)
    chunk = (n + N_CHUNKS - 1) // N_CHUNKS

    f1 = np.empty(m)  # f_1^k, and the bottleneck weights, as float64 rows (1-D slices vectorise, see _dense_forward)
    for k in range(m):
        f1[k] = theta[f_off + k]
    wb = np.empty((nb, m))
    for j in range(nb):
        for k in range(m):
            wb[j, k] = theta[wb_off + j * m + k]

    # ---- forward, particles in chunks (names inside the parallel loops are private to them)
    for c in prange(N_CHUNKS):
        i0, i1 = min(n, c * chunk), min(n, (c + 1) * chunk)  # the last chunks may be empty
        sw = np.empty(m)
        for i in range(i0, i1):
            fi = features[i]
            wi = w_att[i]
            mx = -np.inf
            for k in range(m):
                a_ik = fi[k] * f1[k] + cst[k]
                wi[k] = a_ik
                mx = max(mx, a_ik)
            z_sum = 0.0
            for k in range(m):
                e_ik = _exp_nonpositive(wi[k] - mx)
                wi[k] = e_ik
                z_sum += e_ik
            inv = 1.0 / z_sum
            for k in range(m):
                wi[k] *= inv
                sw[k] = fi[k] * wi[k]
            for j in range(nb):
                wbj = wb[j]
                pre = np.float64(theta[bb_off + j])
                for k in range(m):
                    pre += wbj[k] * sw[k]
                b_out[i, j] = _elu_select(pre)
                act[0, j, i] = b_out[i, j]
            for j in range(n2):
                act[0, nb + j, i] = m2[j]
        _dense_forward(theta, spec_head, act, i0, i1)
        for i in range(i0, i1):
            y[i] = act[n_head, 0, i]

    # ---- loss and dL/dy
    gy = np.empty(n)
    if loss_code == 0:
        mse = 0.0
        for i in range(n):
            d = y[i] - target[i]
            mse += d * d
            gy[i] = 2.0 * d / n
        terms[0] = mse / n
        terms[1] = mse / n
    else:
        w_mae, w_var, label_std, eps = loss_par[0], loss_par[1], loss_par[2], loss_par[3]
        n_shells = weights.shape[0]
        y_mean = 0.0
        t_mean = 0.0
        for i in range(n):
            y_mean += y[i]
            t_mean += target[i]
        y_mean /= n
        t_mean /= n
        l1 = 0.0
        var_y = 0.0
        var_t = 0.0
        for i in range(n):
            l1 += abs(y[i] - target[i])
            var_y += (y[i] - y_mean) ** 2
            var_t += (target[i] - t_mean) ** 2
        l1 /= n * label_std
        var_y /= n
        var_t /= n
        var_t_floor = max(var_t, eps)
        l4 = abs(var_y - var_t) / var_t_floor
        # z = 1 - y, dz = z - zbar = -(y - ybar)
        dz = np.empty(n)
        for i in range(n):
            dz[i] = -(y[i] - y_mean)
        v = np.empty((n_shells, n))
        u = np.empty((n_shells, n))
        _shell_products(weights, dz, v, u)
        dzdz = 0.0
        for i in range(n):
            dzdz += dz[i] * dz[i]
        denom_raw = dzdz / n
        denom = max(denom_raw, eps)
        norm = max(c_true[0] - c_true[n_shells - 1], eps)
        g_dz = np.zeros(n)
        total = w_mae * l1 + w_var * l4
        for k in range(n_shells):
            num = 0.0
            for i in range(n):
                num += dz[i] * v[k, i]
            c_pred = (num / n) / denom
            diff = c_true[k] - c_pred
            l2 = abs(diff) / norm
            terms[3 + k] = l2
            total += corr_weights[k] * l2
            dl_dc = -corr_weights[k] * _sign(diff) / norm
            if dl_dc != 0.0:
                for j in range(n):
                    g = (v[k, j] + u[k, j]) / (n * denom)
                    if denom_raw >= eps:
                        g -= 2.0 * c_pred * dz[j] / (n * denom)
                    g_dz[j] += dl_dc * g
        g_mean = 0.0
        for j in range(n):
            g_mean += g_dz[j]
        g_mean /= n
        s_l1 = w_mae / (n * label_std)
        s_l4 = w_var * _sign(var_y - var_t) / var_t_floor * 2.0 / n
        for i in range(n):
            # dz_j = -(y_j - ybar): dL/dy_i = -(g_dz_i - mean(g_dz))
            gy[i] = s_l1 * _sign(y[i] - target[i]) + s_l4 * (y[i] - y_mean) - (g_dz[i] - g_mean)
        terms[0] = total
        terms[1] = l1
        terms[2] = l4

    # ---- backward, particles in chunks, one gradient accumulator per chunk
    acc = np.zeros((N_CHUNKS, n_par))
    acc_cst = np.zeros((N_CHUNKS, m))
    acc_m2 = np.zeros((N_CHUNKS, max(n2, 1)))
    acc_f1 = np.zeros((N_CHUNKS, m))
    acc_wb = np.zeros((N_CHUNKS, nb, m))
    for c in prange(N_CHUNKS):
        i0, i1 = min(n, c * chunk), min(n, (c + 1) * chunk)  # the last chunks may be empty
        g_head = np.empty((2, head_width, max(i1 - i0, 1)))
        gb = np.empty(nb)
        uk = np.empty(m)
        g_chunk = acc[c]
        for i in range(i0, i1):
            g_head[0, 0, i - i0] = gy[i]
        r = _dense_backward(theta, spec_head, act, i0, i1, g_head, g_chunk)
        for i in range(i0, i1):
            for j in range(n2):
                acc_m2[c, j] += g_head[r, nb + j, i - i0]
            for j in range(nb):
                gb[j] = g_head[r, j, i - i0] * _elu_slope(b_out[i, j])
                g_chunk[bb_off + j] += gb[j]
            fi = features[i]
            wi = w_att[i]
            for k in range(m):
                uk[k] = 0.0
            for j in range(nb):
                gbj = gb[j]
                wbj = wb[j]
                acc_j = acc_wb[c, j]
                for k in range(m):
                    uk[k] += gbj * wbj[k]  # G_k
                    acc_j[k] += gbj * (fi[k] * wi[k])
            w_dot_u = 0.0
            for k in range(m):
                uk[k] *= fi[k]  # u_k = G_k S_k
                w_dot_u += wi[k] * uk[k]
            acc_f1_c = acc_f1[c]
            acc_cst_c = acc_cst[c]
            for k in range(m):
                da = wi[k] * (uk[k] - w_dot_u)
                acc_f1_c[k] += da * fi[k]
                acc_cst_c[k] += da

    grad = np.zeros(n_par)
    g_cst = np.zeros(m)
    g_m2 = np.zeros(max(n2, 1))
    for c in range(N_CHUNKS):
        for p in range(n_par):
            grad[p] += acc[c, p]
        for k in range(m):
            g_cst[k] += acc_cst[c, k]
        for j in range(n2):
            g_m2[j] += acc_m2[c, j]
        for k in range(m):
            grad[f_off + k] += acc_f1[c, k]
            for j in range(nb):
                grad[wb_off + j * m + k] += acc_wb[c, j, k]
    g_m1 = np.zeros(n_state)
    for k in range(m):
        grad[f4_off + k] += g_cst[k]
        for q in range(n_state):
            grad[f_off + (q + 1) * m + k] += m1[q] * g_cst[k]
            g_m1[q] += theta[f_off + (q + 1) * m + k] * g_cst[k]
    g1 = np.zeros((2, width1, 1))
    for q in range(n_state):
        g1[0, q, 0] = g_m1[q]
    _dense_backward(theta, spec1, outs1, 0, 1, g1, grad)
    g2 = np.zeros((2, width2, 1))
    for q in range(n2):
        g2[0, q, 0] = g_m2[q]
    _dense_backward(theta, spec2, outs2, 0, 1, g2, grad)

    # ---- Adam (torch.optim.Adam without weight decay / amsgrad), adam[0] = step after increment
    step, lr, beta1, beta2, eps_adam = adam[0], adam[1], adam[2], adam[3], adam[4]
    if lr > 0.0:
        bias1 = 1.0 - beta1**step
        bias2_sqrt = math.sqrt(1.0 - beta2**step)
        step_size = lr / bias1
        for p in range(n_par):
            g = grad[p]
            m_new = m_adam[p] + (1.0 - beta1) * (g - m_adam[p])
            v_new = beta2 * v_adam[p] + (1.0 - beta2) * g * g
            m_adam[p] = m_new
            v_adam[p] = v_new
            theta[p] = theta[p] - step_size * np.float64(m_adam[p]) / (math.sqrt(np.float64(v_adam[p])) / bias2_sqrt
                                                                         + eps_adam)
    return grad


def _compiled(fn, name: str, parallel: bool):
    """``fn`` compiled by numba under its own name (so that the on-disk caches of the variants stay apart)."""
    clone = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    clone.__qualname__ = name
    clone.__doc__ = fn.__doc__
    return numba.njit(cache=True, parallel=parallel, fastmath=_FASTMATH)(clone)


# One thread: the serial build (prange = range). A parallel region costs a thread wake-up per call: with 2 threads
# a sample took 1.30 ms against 0.83 ms serial even on idle cores, and ~85 ms with one core busy elsewhere
# (benchmarks/results/training.md); the parallel build is kept for machines where that balance differs.
_train_sample_serial = _compiled(_train_sample, "_train_sample_serial", parallel=False)
_train_sample_parallel = _compiled(_train_sample, "_train_sample_parallel", parallel=True)


# ------------------------------------------------------------------------------------------------ driver
def set_kernel_threads(n: int) -> int:
    """Threads of the fused kernel (numba's, for the calling thread): min(n, available). Returns the number set.
    On a machine whose cores are busy with other work, 1 is faster than waiting for a preempted thread."""
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def _dense_layers(seq: nn.Module, where: str, final_activation: bool = False) -> list[nn.Linear]:
    """The Linear layers of Linear, ELU, ..., Linear (ELU) ; FusedUnsupportedError for anything else."""
    if not isinstance(seq, nn.Sequential) or len(seq) == 0:
        raise FusedUnsupportedError(f"{where}: expected an nn.Sequential of Linear and ELU layers")
    layers = list(seq)
    linears = layers[0::2]
    activations = layers[1::2]
    n_act = len(linears) if final_activation else len(linears) - 1
    if len(activations) != n_act or not all(isinstance(x, nn.Linear) for x in linears):
        raise FusedUnsupportedError(f"{where}: expected alternating Linear and ELU layers, got {seq}")
    for a in activations:
        if not isinstance(a, nn.ELU) or float(a.alpha) != 1.0:
            raise FusedUnsupportedError(f"{where}: the fused kernel implements ELU(alpha = 1) only, got {a}")
    return linears


class FusedTrainingStep:
    """Train a :class:`TGlassMLP` one sample at a time with the fused numba kernel (module docstring).

    Args:
        network: the TGlassMLP (float32, CPU; ELU activations, Linear + ELU bottleneck).
        loss: the phase-2 :class:`GlassMLPLoss` (exactly that class: the kernel implements its terms).
        label_std: std of the training labels (L1 of the loss).

    Raises:
        FusedUnsupportedError: for any other architecture, activation, loss class, dtype or device.

    Use: :meth:`pull` (torch -> flat), :meth:`step` per sample, :meth:`push` (flat -> torch).
    """

    def __init__(self, network: nn.Module, loss: nn.Module, label_std: float | None):
        if type(network) is not TGlassMLP:
            raise FusedUnsupportedError(f"the fused kernel implements TGlassMLP only, got {type(network).__name__}")
        if type(loss) is not GlassMLPLoss:
            raise FusedUnsupportedError(f"the fused kernel implements GlassMLPLoss only, got {type(loss).__name__}")
        params = list(network.parameters())
        if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
            raise FusedUnsupportedError("the fused kernel needs float32 parameters on the CPU")
        self.network = network
        self.loss = loss
        self.label_std = None if label_std is None else float(label_std)
        self.params = params
        offsets, start = {}, 0
        for p in params:
            offsets[id(p)] = start
            start += p.numel()
        self.n_parameters = start

        def spec(linears):
            return np.array([[offsets[id(lin.weight)], offsets[id(lin.bias)], lin.in_features, lin.out_features]
                             for lin in linears], dtype=np.int64)

        self.spec1 = spec(_dense_layers(network.mlp1, "mlp1"))
        self.spec2 = spec(_dense_layers(network.mlp2, "mlp2"))
        self.spec_head = spec(_dense_layers(network.head, "head"))
        bottleneck = _dense_layers(network.bottleneck, "bottleneck", final_activation=True)
        if len(bottleneck) != 1:
            raise FusedUnsupportedError("bottleneck: expected one Linear + ELU layer")
        wb = bottleneck[0]
        att = network.attention
        if self.spec_head[-1, 3] != 1 or self.spec1[-1, 3] != att.n_state:
            raise FusedUnsupportedError("head must end in one output and MLP1 in the attention's state channels")
        if self.spec_head[0, 2] != wb.out_features + self.spec2[-1, 3]:
            raise FusedUnsupportedError("head input must be [bottleneck, MLP2]")
        self.att = np.array([offsets[id(att.f)], att.n_state, offsets[id(wb.weight)], offsets[id(wb.bias)],
                             wb.out_features], dtype=np.int64)
        self.theta = np.zeros(self.n_parameters, dtype=np.float32)
        self.m = np.zeros_like(self.theta)
        self.v = np.zeros_like(self.theta)
        self.step_count = 0
        self.adam = np.zeros(5)
        self.terms = np.zeros(3 + len(loss.radii))
        self.corr_weights = np.asarray(loss.weight_correlation, dtype=np.float64)
        self._empty_weights = np.zeros((len(loss.radii), 1, 1), dtype=np.float32)

    # ---- torch <-> flat
    @staticmethod
    def check_optimizer(optimizer: torch.optim.Optimizer) -> None:
        """The kernel's update is torch.optim.Adam without weight decay, AMSGrad or maximize, one group."""
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            raise FusedUnsupportedError("the fused kernel implements torch.optim.Adam with one parameter group")
        g = optimizer.param_groups[0]
        if g.get("weight_decay", 0) or g.get("amsgrad") or g.get("maximize") or g.get("differentiable"):
            raise FusedUnsupportedError("fused Adam: weight_decay, amsgrad, maximize and differentiable unsupported")

    @torch.no_grad()
    def pull(self, optimizer: torch.optim.Optimizer) -> None:
        """Copy the network's parameters and the optimiser's Adam state into the flat arrays."""
        self.check_optimizer(optimizer)
        group = optimizer.param_groups[0]
        if [id(p) for p in group["params"]] != [id(p) for p in self.params]:
            raise FusedUnsupportedError("the optimiser must hold exactly the network's parameters, in order")
        steps = set()
        start = 0
        for p in self.params:
            k = p.numel()
            self.theta[start:start + k] = p.detach().reshape(-1).numpy()
            state = optimizer.state.get(p, {})
            if "exp_avg" in state:
                self.m[start:start + k] = state["exp_avg"].reshape(-1).numpy()
                self.v[start:start + k] = state["exp_avg_sq"].reshape(-1).numpy()
                steps.add(int(float(state["step"])))
            else:
                self.m[start:start + k] = 0.0
                self.v[start:start + k] = 0.0
                steps.add(0)
            start += k
        if len(steps) != 1:
            raise FusedUnsupportedError(f"Adam step counts differ between parameters: {sorted(steps)}")
        self.step_count = steps.pop()
        self.adam[1:] = (group["lr"], group["betas"][0], group["betas"][1], group["eps"])

    @torch.no_grad()
    def push(self, optimizer: torch.optim.Optimizer) -> None:
        """Write the flat parameters and Adam state back (torch.optim.Adam's state format)."""
        fused = bool(optimizer.param_groups[0].get("fused"))
        start = 0
        for p in self.params:
            k = p.numel()
            p.copy_(torch.from_numpy(self.theta[start:start + k]).reshape(p.shape))
            if self.step_count > 0:
                state = optimizer.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg"].copy_(torch.from_numpy(self.m[start:start + k]).reshape(p.shape))
                state["exp_avg_sq"].copy_(torch.from_numpy(self.v[start:start + k]).reshape(p.shape))
                state["step"] = torch.tensor(float(self.step_count), dtype=torch.float32,
                                             device=p.device if fused else "cpu")
            start += k

    # ---- one sample
    def state_input(self, temperature: float, level: float) -> np.ndarray:
        """(6,) standardised state features of App. B, float64."""
        beta = 1.0 / float(np.float32(temperature))
        c = float(np.float32(level))
        x = np.array([beta, beta**2, beta**3, c, c**2, c**3])
        net = self.network
        return (x - net.state_mean.numpy().astype(np.float64)) / net.state_std.numpy().astype(np.float64)

    def step(self, sample: dict, kind: str, target_correlation=None, update: bool = True) -> dict[str, float]:
        """Forward, loss, gradient and (``update``) one Adam step on one sample (a batch-of-one dict of
        :class:`~tglassmlp.training.datamodule.PropensityDataset`). Returns the loss terms as floats (the keys of the
        torch losses' logging dicts). With ``update=False`` nothing changes; :attr:`last_gradient` holds (P,)."""
        if kind not in LOSS_CODES:
            raise ValueError(f"unknown loss kind {kind!r}; known: {sorted(LOSS_CODES)}")
        features = sample["descriptors"]
        if features.ndim != 3 or features.shape[0] != 1:
            raise ValueError(f"the fused step takes one sample at a time, got descriptors {tuple(features.shape)}")
        features = np.ascontiguousarray(features[0].numpy(), dtype=np.float32)
        target = np.ascontiguousarray(sample["target"][0].numpy(), dtype=np.float32)
        x = self.state_input(float(sample["temperature"][0]), float(sample["level"][0]))
        code = LOSS_CODES[kind]
        k = len(self.loss.radii)
        if code == 1:
            weights = sample["neighbour_weights"][0]
            if weights.shape != (k, target.shape[0], target.shape[0]):
                raise ValueError(f"neighbour_weights {tuple(weights.shape)} do not match K = {k} shells and "
                                 f"N = {target.shape[0]} particles")
            weights = np.ascontiguousarray(weights.numpy(), dtype=np.float32)
            if self.label_std is None:
                raise ValueError("label_std (std of the training labels) is needed for the GlassMLP loss")
            if target_correlation is None:  # C_k of the labels (the module caches it per sample)
                with torch.no_grad():
                    target_correlation = self.loss.target_correlation(sample["target"], sample["neighbour_weights"])
            c_true = np.asarray(target_correlation.detach().reshape(-1).numpy(), dtype=np.float64)
            par = np.array([self.loss.weight_mae, self.loss.weight_variance, self.label_std, self.loss.eps])
        else:
            weights, c_true, par = self._empty_weights, np.zeros(k), np.array([0.0, 0.0, 1.0, 1.0])
        if update:
            self.step_count += 1
        adam = self.adam.copy()
        adam[0] = max(self.step_count, 1)
        if not update:
            adam[1] = 0.0  # lr 0: the kernel skips the update
        theta = self.theta if update else self.theta.copy()
        m, v = (self.m, self.v) if update else (self.m.copy(), self.v.copy())
        kernel = _train_sample_parallel if numba.get_num_threads() > 1 else _train_sample_serial
        self.last_gradient = kernel(theta, m, v, adam, x, features, target, weights, c_true, code, par,
                                           self.corr_weights, self.spec1, self.spec2, self.spec_head, self.att,
                                           self.terms)
        t = self.terms
        if code == 0:
            return {"loss": float(t[0]), "mse": float(t[1])}
        out = {"loss": float(t[0]), "l1": float(t[1]), "l4": float(t[2])}
        for q in range(k):
            out[f"l2_{q + 1}"] = float(t[3 + q])
        return out
