"""The fused numba training step (tglassmlp.model.fused) against torch autograd and torch.optim.Adam."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tglassmlp.model import GlassMLPLoss, PropensityMSELoss, TGlassMLP, neighbour_weights
from tglassmlp.model.fused import FusedTrainingStep, FusedUnsupportedError, set_kernel_threads

#: kernel (float64 arithmetic on float32 inputs) vs a float64 autograd evaluation of the same float32 numbers:
#: only summation order and the polynomial softmax exponential (~1e-10 relative) differ
RTOL_FLOAT64 = 1e-7
#: Adam trajectories: torch's float32 gradients carry ~1e-6 relative rounding, which Adam's g / sqrt(v) passes on
#: to every update of size ~lr; after STEPS steps the parameters differ by at most a small multiple of that
PARAM_ATOL = 2e-6
STEPS = 20
BOX = 12.0


def sample_for(n, m, temperature, level, seed):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0, BOX, (n, 2))
    # labels correlated in space (a smooth field) so that the C_k terms are far from zero
    field = np.cos(2 * np.pi * positions[:, 0] / BOX) + 0.5 * rng.normal(size=n)
    target = 1.0 / (1.0 + np.exp(-(np.log(level / (1 - level)) + 0.7 * field)))
    return {
        "descriptors": torch.tensor(rng.normal(size=(1, n, m)), dtype=torch.float32),
        "temperature": torch.tensor([temperature], dtype=torch.float32),
        "level": torch.tensor([level], dtype=torch.float32),
        "target": torch.tensor(target[None], dtype=torch.float32),
        "neighbour_weights": neighbour_weights(positions, BOX)[None],
    }


def autograd_reference(network, loss, sample, kind, label_std, dtype):
    """Loss terms and the flat gradient from torch autograd, with the network and inputs in ``dtype``."""
    net = copy.deepcopy(network).to(dtype)
    b = {k: v.to(dtype) for k, v in sample.items()}
    pred = net(b["descriptors"], b["temperature"], b["level"])
    c_true = loss.target_correlation(b["target"], b["neighbour_weights"])
    fn = PropensityMSELoss() if kind == "mse" else loss
    total, terms = fn(pred, b["target"], neighbour_weights=b["neighbour_weights"], label_std=label_std,
                      target_correlation=c_true)
    total.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in net.parameters()]).double().numpy()
    return {k: float(v) for k, v in terms.items()}, grad, c_true


ARCHITECTURES = {
    "paper": {},
    "other sizes": dict(mlp1_hidden=(5,), mlp1_out=3, mlp2_hidden=(4, 6, 3), mlp2_out=2, n_bottleneck=3,
                        head_hidden=(7,)),
}


@pytest.mark.parametrize("arch,n", [("paper", 150), ("other sizes", 41), ("other sizes", 5)])
@pytest.mark.parametrize("kind", ["mse", "glassmlp"])
def test_loss_and_gradient_equal_float64_autograd(arch, n, kind):
    """n = 41 and 5 leave the last particle chunks of the kernel short or empty."""
    m = 172 if arch == "paper" else 9
    network = TGlassMLP(n_descriptors=m, seed=2, **ARCHITECTURES[arch])
    network.set_state_normalization([0.3, 0.45, 0.6], [0.9, 0.5, 0.2])
    label_std = 0.17
    loss = GlassMLPLoss(label_std=label_std)
    sample = sample_for(n, m, 0.45, 0.7, seed=1)
    ref_terms, ref_grad, c_true = autograd_reference(network, loss, sample, kind, label_std, torch.float64)
    assert np.abs(ref_grad).max() > 1e-3  # a gradient worth comparing

    fused = FusedTrainingStep(network, loss, label_std)
    fused.pull(torch.optim.Adam(network.parameters()))
    before = fused.theta.copy()
    terms = fused.step(sample, kind, c_true, update=False)
    np.testing.assert_array_equal(fused.theta, before)  # update=False changes nothing
    if kind == "glassmlp":  # without the cached C_k of the labels, the step computes it (float32: looser)
        assert fused.step(sample, kind, update=False)["loss"] == pytest.approx(terms["loss"], rel=1e-5)
    assert terms.keys() == ref_terms.keys()
    for name, value in ref_terms.items():
        assert terms[name] == pytest.approx(value, rel=RTOL_FLOAT64, abs=1e-12), name
    err = np.linalg.norm(fused.last_gradient - ref_grad) / np.linalg.norm(ref_grad)
    assert err < RTOL_FLOAT64, err


def test_every_parameter_gets_its_own_gradient():
    """Mutation check of the layout: perturbing one parameter's gradient slot would go unnoticed in a norm; compare
    parameter by parameter, and make sure every tensor has a nonzero gradient."""
    network = TGlassMLP(n_descriptors=11, seed=4)
    loss = GlassMLPLoss(label_std=0.2)
    sample = sample_for(80, 11, 0.4, 0.5, seed=3)
    _, ref_grad, c_true = autograd_reference(network, loss, sample, "glassmlp", 0.2, torch.float64)
    fused = FusedTrainingStep(network, loss, 0.2)
    fused.pull(torch.optim.Adam(network.parameters()))
    fused.step(sample, "glassmlp", c_true, update=False)
    start = 0
    for name, p in network.named_parameters():
        k = p.numel()
        got, want = fused.last_gradient[start:start + k], ref_grad[start:start + k]
        assert np.abs(want).max() > 0, name
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * np.abs(ref_grad).max(), err_msg=name)
        start += k


def test_adam_trajectory_equals_torch_adam():
    """STEPS alternating MSE / full-loss steps: the kernel's parameters and Adam state track torch.optim.Adam's
    (fused=True, as configure_optimizers makes it), and the state written back is torch's format (a torch step
    after the kernel's steps continues the same trajectory)."""
    m = 24
    label_std = 0.2
    loss = GlassMLPLoss(label_std=label_std)
    net_torch = TGlassMLP(n_descriptors=m, seed=7)
    net_fused = copy.deepcopy(net_torch)
    opt_torch = torch.optim.Adam(net_torch.parameters(), lr=3e-3, fused=True)
    opt_fused = torch.optim.Adam(net_fused.parameters(), lr=3e-3, fused=True)
    samples = [sample_for(120, m, t, c, seed=s) for s, (t, c) in enumerate([(0.4, 0.8), (0.5, 0.4), (0.6, 0.6)])]
    fused = FusedTrainingStep(net_fused, loss, label_std)
    for step in range(STEPS + 2):
        sample = samples[step % len(samples)]
        kind = "mse" if step % 2 else "glassmlp"
        c_true = loss.target_correlation(sample["target"], sample["neighbour_weights"])
        fn = PropensityMSELoss() if kind == "mse" else loss
        pred = net_torch(sample["descriptors"], sample["temperature"], sample["level"])
        total, _ = fn(pred, sample["target"], neighbour_weights=sample["neighbour_weights"], target_correlation=c_true)
        opt_torch.zero_grad()
        total.backward()
        opt_torch.step()
        if step < STEPS:  # pull/push around every few samples, as the module does per Lightning step
            if step % 4 == 0:
                fused.pull(opt_fused)
            fused.step(sample, kind, c_true)
            if step % 4 == 3 or step == STEPS - 1:
                fused.push(opt_fused)
        else:  # the last steps by torch from the state the kernel wrote back
            pred = net_fused(sample["descriptors"], sample["temperature"], sample["level"])
            total, _ = fn(pred, sample["target"], neighbour_weights=sample["neighbour_weights"],
                          target_correlation=c_true)
            opt_fused.zero_grad()
            total.backward()
            opt_fused.step()
    moved = max(float((p - q).detach().abs().max()) for p, q in zip(net_torch.parameters(), TGlassMLP(n_descriptors=m, seed=7)
                                                            .parameters()))
    assert moved > 1e-2  # the parameters really moved (lr 3e-3 x 22 steps)
    for (name, p), q in zip(net_torch.named_parameters(), net_fused.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=PARAM_ATOL, msg=name)
        s_t, s_f = opt_torch.state[p], opt_fused.state[q]
        assert float(s_f["step"]) == float(s_t["step"]) == STEPS + 2
        torch.testing.assert_close(s_f["exp_avg"], s_t["exp_avg"], rtol=1e-3, atol=1e-7)


def test_result_does_not_depend_on_the_thread_count():
    m = 30
    loss = GlassMLPLoss(label_std=0.2)
    sample = sample_for(200, m, 0.4, 0.6, seed=5)
    c_true = loss.target_correlation(sample["target"], sample["neighbour_weights"])
    results = []
    try:
        for threads in (1, 2):
            set_kernel_threads(threads)
            network = TGlassMLP(n_descriptors=m, seed=1)
            fused = FusedTrainingStep(network, loss, 0.2)
            fused.pull(torch.optim.Adam(network.parameters()))
            for kind in ("mse", "glassmlp", "glassmlp"):
                fused.step(sample, kind, c_true)
            results.append(fused.theta.copy())
    finally:
        set_kernel_threads(torch.get_num_threads())
    np.testing.assert_array_equal(results[0], results[1])


def test_unsupported_models_are_refused_with_the_reason():
    loss = GlassMLPLoss(label_std=0.2)
    with pytest.raises(FusedUnsupportedError, match="ELU"):
        FusedTrainingStep(TGlassMLP(n_descriptors=5, activation="relu"), loss, 0.2)
    with pytest.raises(FusedUnsupportedError, match="float32"):
        FusedTrainingStep(TGlassMLP(n_descriptors=5).double(), loss, 0.2)
    network = TGlassMLP(n_descriptors=5)
    with pytest.raises(FusedUnsupportedError, match="weight_decay"):
        FusedTrainingStep.check_optimizer(torch.optim.Adam(network.parameters(), weight_decay=1e-4))
    with pytest.raises(FusedUnsupportedError, match="Adam"):
        FusedTrainingStep.check_optimizer(torch.optim.SGD(network.parameters(), lr=0.1))
    fused = FusedTrainingStep(network, loss, 0.2)
    with pytest.raises(ValueError, match="one sample at a time"):
        bad = sample_for(20, 5, 0.4, 0.5, seed=0)
        bad["descriptors"] = bad["descriptors"].expand(2, -1, -1)
        fused.step(bad, "mse")
