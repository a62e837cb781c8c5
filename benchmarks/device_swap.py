"""The batched OpenCL swap MC kernel on a GPU: B = 128 and 1024 chains at N = 1290 (called by device_check.py).

``run(results_dir, budget_s)`` measures attempted moves per second on the first GPU OpenCL device within
``budget_s`` seconds and writes ``device_swap.json`` / ``.md`` (device name, driver, commit) to
``results_dir``; without a GPU it prints one line and returns {"skipped": "no GPU OpenCL device"}.
Standalone: ``python benchmarks/device_swap.py [--budget-s 300]``.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_PARTICLES = 1290
TEMPERATURE = 0.3
BATCHES = (128, 1024)


def _gpu():
    try:
        import pyopencl as cl

        from tglassmlp.physics.swap_mc_opencl import opencl_devices
        return next((d for d in opencl_devices() if d.type & cl.device_type.GPU), None)
    except Exception:  # no pyopencl, no ICD loader
        return None


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def run(results_dir: Path, budget_s: float) -> dict:
    device = _gpu()
    if device is None:
        print("device_swap: skipped, no GPU OpenCL device")
        return {"skipped": "no GPU OpenCL device"}
    from tglassmlp.atomic import write_json_atomic, write_text_atomic
    from tglassmlp.physics import load_system
    from tglassmlp.physics.swap_mc import SwapMonteCarlo, _random_start
    from tglassmlp.physics.swap_mc_opencl import BatchedSwapMonteCarlo

    t_start = time.perf_counter()
    system = load_system()
    box = system.box_for(N_PARTICLES)
    rng = np.random.default_rng(1)
    pos, types = _random_start(N_PARTICLES, box, system.composition_for(N_PARTICLES), rng)
    # a liquid-like structure at T from the numba sampler on the host (d adapted there, then frozen)
    mc = SwapMonteCarlo(2.0, seed=1).reset(pos, types, box)
    mc.adapt(60)
    mc.temperature = TEMPERATURE
    mc.adapt(200)
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               command=" ".join(sys.argv), commit=_commit(), device=device.name, vendor=device.vendor,
               driver=device.driver_version, platform=device.platform.name, n_particles=N_PARTICLES,
               temperature=TEMPERATURE, max_displacement=mc.max_displacement, budget_s=budget_s, batches={})
    for k, b in enumerate(BATCHES):
        # each batch gets an equal share of what is left of the budget (preparation included)
        share = (budget_s - (time.perf_counter() - t_start)) / (len(BATCHES) - k)
        t0 = time.perf_counter()
        ocl = BatchedSwapMonteCarlo(TEMPERATURE, seed=1, device=device).reset(
            np.repeat(mc.positions[None], b, axis=0), np.repeat(mc.types[None], b, axis=0), box)
        ocl.max_displacement = mc.max_displacement
        ocl.run(2)  # compile, first launch
        setup_s = time.perf_counter() - t0
        sweeps, elapsed, n = 0, 0.0, 4
        while True:
            t1 = time.perf_counter()
            ocl.run(n)
            elapsed += time.perf_counter() - t1
            sweeps += n
            left = share - (time.perf_counter() - t0)
            rate = elapsed / sweeps
            if left < 3 * rate * n * 2 or elapsed > 0.8 * share:
                break
            n = int(min(2 * n, max(1, 0.5 * left / rate)))
        drift = ocl.check_energy(1e-6)
        moves = sweeps * N_PARTICLES * b
        out["batches"][str(b)] = dict(sweeps=sweeps, seconds=elapsed, setup_s=setup_s, moves_per_s=moves / elapsed,
                                      sweeps_per_s_per_chain=sweeps / elapsed,
                                      acceptance_displacement=float(np.mean(ocl.acceptance_displacement)),
                                      acceptance_swap=float(np.mean(ocl.acceptance_swap)), energy_drift=drift)
        print(f"device_swap: {device.name} B = {b}: {moves / elapsed / 1e6:.1f} M moves/s "
              f"({sweeps} sweeps in {elapsed:.1f} s)", flush=True)
    results_dir = Path(results_dir)
    write_json_atomic(results_dir / "device_swap.json", out)
    lines = ["# Batched OpenCL swap MC on a GPU (benchmarks/device_swap.py)", "",
             f"- date: {out['date']}; commit {out['commit']}; command `{out['command']}`",
             f"- device: {out['device']} ({out['vendor']}, driver {out['driver']}, platform {out['platform']})",
             f"- N = {N_PARTICLES}, T = {TEMPERATURE}, d = {out['max_displacement']:.4f}, swaps on; budget {budget_s:.0f} s",
             "", "| B chains | sweeps | s | M moves/s | sweeps/s per chain | acceptance displ. / swap | energy drift |",
             "|---|---|---|---|---|---|---|"]
    for b, r in out["batches"].items():
        lines.append(f"| {b} | {r['sweeps']} | {r['seconds']:.1f} | {r['moves_per_s'] / 1e6:.2f} | "
                     f"{r['sweeps_per_s_per_chain']:.1f} | {r['acceptance_displacement']:.3f} / "
                     f"{r['acceptance_swap']:.4f} | {r['energy_drift']:.1e} |")
    write_text_atomic(results_dir / "device_swap.md", "\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=300.0)
    ap.add_argument("--results-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    run(a.results_dir, a.budget_s)
