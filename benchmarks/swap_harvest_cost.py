"""Core-hours per independent equilibrated N = 1290 structure: fresh chain vs harvesting (issue 14, cost table).

Inputs (rerun when the kernel gets faster):

* tau_Q(T) [sweeps, cage frame]: measured on equilibrium chains from the GlassBench structure at T = 0.4, 0.3,
  0.25, 0.23 (``benchmarks/results/swap_glassbench_anchor_T<T>.json``); extrapolated to 0.21, 0.18, 0.15 by
  Arrhenius through the two lowest T (lower estimate: the growth is super-Arrhenius) and by a VFT fit
  through all four (``swap_glassbench_anchor.extrapolate``).
* THROUGHPUT: CPU milliseconds per sweep of one core at N = 1290. ``--measure SWEEPS`` measures it in the same
  run: the GlassBench T = 0.23 structure at T = 0.15 (where the cost is asked), d adapted as in the protocol,
  then SWEEPS sweeps with swaps timed by the process's CPU time (the machine is shared), median of 3 runs. Or
  given by hand (``--ms-per-sweep``); default: 1.40 ms, the
  CPU time per sweep measured by process time in this session's N = 1290 chains (1.38 ms in
  swap_harvest_spacing at T = 0.4 and 0.3; 1.44 ms in swap_eis_cascades at 0.4, on a loaded 2-core machine;
  1.25 ms on an idle core in session 4). CPU time, not wall time: the machine was shared.
* A fresh chain (started from an equilibrated structure one rung up, a cooling cascade) needs the criterion's
  production: window = last half >= n_decorrelation tau_Q, i.e. >= 2 n_decorrelation tau_Q = 20 tau_Q
  (minimum; the doubling blocks overshoot by up to 2x: the anchors needed 29 tau_Q at 0.3 and 21 at 0.25).
* Harvesting K structures from one chain: the same equilibration once, then (K - 1) x harvest_spacing x tau_Q;
  per structure (20 + (K - 1) s) tau_Q / K, -> s tau_Q for many structures per chain (s = 3: successive
  cage-frame overlap ~0.13 measured at T = 0.4 and 0.3, swap_harvest_spacing.md; assumed to hold in units of
  tau_Q at lower T).

    python benchmarks/swap_harvest_cost.py --measure 20000 [--spacing 3]
    python benchmarks/swap_harvest_cost.py [--ms-per-sweep 1.40] [--spacing 3]

Results: ``benchmarks/results/swap_harvest_cost.{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402
from swap_glassbench_anchor import GLASSBENCH, extrapolate  # noqa: E402

from tglassmlp.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from tglassmlp.physics.swap_mc import load_swap_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MEASURED_T = (0.4, 0.3, 0.25, 0.23)
EXTRAPOLATED_T = (0.21, 0.18, 0.15)
# ---- THROUGHPUT PARAMETER: CPU ms per sweep at N = 1290 (one core). Regenerate the table with the faster
# kernel's number: python benchmarks/swap_harvest_cost.py --ms-per-sweep <new>
MS_PER_SWEEP = 1.40
TARGET_CORE_HOURS = 5.0
PER_CHAIN = (1, 10, 100)
MEASURE_T = 0.15


def measure_ms_per_sweep(sweeps: int, repeats: int = 3, opencl_chains: int = 16) -> dict:
    """CPU ms per sweep at N = 1290, T = 0.15, from the GlassBench structure (medians of interleaved runs): the
    numba kernel, and (where an OpenCL device exists) the batched OpenCL kernel with ``opencl_chains`` chains
    (ms per sweep of one chain = N / its moves per CPU-s)."""
    import time

    from tglassmlp.data.glassbench import read_glassbench
    from tglassmlp.physics.swap_mc import SwapMonteCarlo

    gb = read_glassbench(GLASSBENCH)
    mc = SwapMonteCarlo(MEASURE_T, seed=0)
    mc.reset(gb.positions, gb.types, gb.box)
    mc.adapt(load_swap_settings().adapt_sweeps_at_target)
    ocl = None
    try:
        from tglassmlp.physics.swap_mc_opencl import BatchedSwapMonteCarlo

        ocl = BatchedSwapMonteCarlo(MEASURE_T, seed=0).reset(
            np.repeat(gb.positions[None], opencl_chains, 0), np.repeat(gb.types[None], opencl_chains, 0), gb.box)
        ocl.max_displacement = mc.max_displacement
        ocl.run(20)  # compile outside the timing
    except Exception as err:  # no OpenCL device / pyopencl: the numba rows only
        print(f"OpenCL not measured: {err}", flush=True)
        ocl = None
    runs, runs_ocl = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        mc.run(sweeps)
        runs.append(1e3 * (time.process_time() - c0) / sweeps)
        if ocl is not None:
            s = max(2, sweeps // opencl_chains)
            c0 = time.process_time()
            ocl.run(s)
            runs_ocl.append(1e3 * (time.process_time() - c0) / (s * opencl_chains))
    mc.check_energy()
    out = dict(ms_per_sweep=float(np.median(runs)), runs_ms=runs, sweeps=sweeps, temperature=MEASURE_T,
               n_particles=int(gb.types.size), max_displacement=float(mc.max_displacement),
               acceptance_displacement=mc.acceptance_displacement, acceptance_swap=mc.acceptance_swap)
    if ocl is not None:
        ocl.check_energy()
        out.update(opencl_chains=opencl_chains, opencl_ms_per_sweep=float(np.median(runs_ocl)),
                   opencl_runs_ms=runs_ocl, opencl_device=str(ocl.device.name),
                   opencl_acceptance_swap=float(np.nanmean(ocl.acceptance_swap)))
    return out


def opencl_tau_ratio():
    """tau_Q(OpenCL) / tau_Q(numba) in sweeps at the lowest T measured side by side (swap_opencl.json), or None."""
    path = RESULTS / "swap_opencl.json"
    if not path.is_file():
        return None
    taus = json.loads(path.read_text()).get("tau") or []
    taus = [t for t in ([taus] if isinstance(taus, dict) else taus) if t["tau_numba"] and t["tau_opencl"]]
    if not taus:
        return None
    t = min(taus, key=lambda t: t["temperature"])
    return dict(temperature=t["temperature"], ratio=t["tau_opencl"] / t["tau_numba"], tau_numba=t["tau_numba"],
                tau_opencl=t["tau_opencl"], start=t.get("start", "random"))


def measured_tau() -> dict:
    out = {}
    for t in MEASURED_T:
        d = json.loads((RESULTS / f"swap_glassbench_anchor_T{t:g}.json").read_text())
        out[t] = float(d["report"]["tau_overlap"])
    return out


def cost_rows(taus: dict, ms_per_sweep: float, spacing: float, n_eq: float):
    fits = {}
    for t in EXTRAPOLATED_T:
        e = extrapolate(taus, t)
        fits[t] = (e["arrhenius"], e.get("vft"))
    rows = []
    for t in MEASURED_T[1:] + EXTRAPOLATED_T:
        cases = [("measured", taus[t])] if t in taus else [("Arrhenius", fits[t][0]), ("VFT", fits[t][1])]
        for how, tau in cases:
            hours = ms_per_sweep / 3.6e6
            fresh = n_eq * tau
            per = {k: (n_eq + (k - 1) * spacing) * tau / k for k in PER_CHAIN}
            rows.append(dict(temperature=t, tau_source=how, tau_q=tau, fresh_sweeps=fresh,
                             fresh_core_hours=fresh * hours,
                             harvest_core_hours={str(k): v * hours for k, v in per.items()},
                             harvest_limit_core_hours=spacing * tau * hours))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ms-per-sweep", type=float, default=MS_PER_SWEEP)
    ap.add_argument("--measure", type=int, default=0, metavar="SWEEPS",
                    help="measure the CPU ms per sweep here (SWEEPS sweeps at T = 0.15, 3 runs) instead")
    ap.add_argument("--spacing", type=float, default=None, help="harvest spacing [tau_Q] (default: conf)")
    args = ap.parse_args()
    settings = load_swap_settings()
    spacing = settings.harvest_spacing if args.spacing is None else args.spacing
    n_eq = 2.0 * settings.n_decorrelation
    taus = measured_tau()
    measured = measure_ms_per_sweep(args.measure) if args.measure else None
    if measured:
        args.ms_per_sweep = measured["ms_per_sweep"]
    rows = cost_rows(taus, args.ms_per_sweep, spacing, n_eq)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    head = " | ".join(f"harvest, {k} per chain" for k in PER_CHAIN[1:])
    lines = ["# Core-hours per independent equilibrated N = 1290 structure (benchmarks/swap_harvest_cost.py)", "",
             f"Throughput: **{args.ms_per_sweep:.3g} ms CPU per sweep** (one core, N = 1290; "
             + (f"measured in this run: T = {measured['temperature']:g} from the GlassBench structure, d = "
                f"{measured['max_displacement']:.3f}, acceptance {measured['acceptance_displacement']:.3f} / "
                f"{measured['acceptance_swap']:.1e} (displacement / swap), {measured['sweeps']} sweeps x 3, CPU ms "
                + ", ".join(f"{r:.3f}" for r in measured["runs_ms"]) + ")" if measured else
                "given with `--ms-per-sweep`)") + ". Fresh chain: the criterion's minimum "
             f"production {n_eq:g} tau_Q from an equilibrated structure one rung up (doubling blocks can add up "
             f"to 2x). Harvesting: that once, then one structure every {spacing:g} tau_Q; 'many per chain' = "
             f"{spacing:g} tau_Q per structure. tau_Q measured at 0.3, 0.25, 0.23 (swap_glassbench_anchor), "
             "extrapolated below (Arrhenius through 0.25 and 0.23: lower estimate; VFT through 0.4-0.23).", "",
             f"| T | tau_Q [sweeps] | fresh chain [core-h] | {head} | harvest, many per chain [core-h] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['temperature']:g} | {r['tau_q']:.2g} ({r['tau_source']}) | {r['fresh_core_hours']:.3g} | "
                     + " | ".join(f"{r['harvest_core_hours'][str(k)]:.3g}" for k in PER_CHAIN[1:])
                     + f" | {r['harvest_limit_core_hours']:.3g} |")
    ratio = opencl_tau_ratio()
    ocl_rows = None
    if measured and "opencl_ms_per_sweep" in measured and ratio:
        # a chain's cost per structure: spacing x tau_Q(OpenCL) sweeps = spacing x ratio x tau_Q(numba)
        ocl_rows = cost_rows(taus, measured["opencl_ms_per_sweep"] * ratio["ratio"], spacing, n_eq)
    low = [r for r in rows if r["temperature"] == 0.15]
    lo, hi = min(r["harvest_limit_core_hours"] for r in low), max(r["harvest_limit_core_hours"] for r in low)
    need = hi / TARGET_CORE_HOURS
    lines += ["", f"Target <= {TARGET_CORE_HOURS:g} core-hours per structure at T = 0.15: harvesting gives "
              f"{lo:.3g}-{hi:.3g} core-hours (many per chain, {spacing:g} tau_Q apart) at this throughput: "
              + ("**met**." if hi <= TARGET_CORE_HOURS else
                 (f"**met for the lower (Arrhenius) extrapolation only**; the upper (VFT) one needs a {need:.2g}x "
                  "faster kernel at this spacing." if lo <= TARGET_CORE_HOURS else
                  f"**not met**; it needs a {lo / TARGET_CORE_HOURS:.2g}-{need:.2g}x faster kernel at this spacing "
                  f"(or a spacing of {spacing * TARGET_CORE_HOURS / hi:.2g}-{spacing * TARGET_CORE_HOURS / lo:.2g} "
                  "tau_Q, where successive structures are far from independent: overlap > 0.3).")),
              f"Fresh chains at 0.15: {min(r['fresh_core_hours'] for r in low):.3g}-"
              f"{max(r['fresh_core_hours'] for r in low):.3g} core-hours each. Whatever the harvest, the FIRST "
              f"structure of a chain at 0.15 still needs {n_eq:g} tau_Q: "
              f"{min(n_eq * r['tau_q'] for r in low) * args.ms_per_sweep / 3.6e6:.3g}-"
              f"{max(n_eq * r['tau_q'] for r in low) * args.ms_per_sweep / 3.6e6:.3g} h of one core (latency).", "",
              "Scenarios at T = 0.15 (many structures per chain; core-hours per structure, Arrhenius-VFT):", "",
              "| kernel speed-up vs this throughput | spacing 2 tau_Q (overlap ~0.2) | spacing 3 tau_Q (~0.13) | "
              "spacing 4 tau_Q (~0.09) |", "|---|---|---|---|"]
    if ocl_rows:
        lines[lines.index("Scenarios at T = 0.15 (many structures per chain; core-hours per structure, "
                          "Arrhenius-VFT):"):0] = ([
            f"Batched OpenCL kernel on this CPU (PoCL, B = {measured['opencl_chains']} chains): "
            f"{measured['opencl_ms_per_sweep']:.3g} ms CPU per sweep of one chain at T = 0.15 (this run; CPU ms "
            + ", ".join(f"{r:.3f}" for r in measured["opencl_runs_ms"]) + f"; swap acceptance "
            f"{measured['opencl_acceptance_swap']:.1e}), and its cell-local moves relax in {ratio['ratio']:.2f}x "
            f"numba's tau_Q in sweeps (measured side by side at T = {ratio['temperature']:g}, "
            f"benchmarks/results/swap_opencl.md: {ratio['tau_opencl']:.3g} vs {ratio['tau_numba']:.3g}; assumed "
            "to hold below). Core-hours per structure, harvesting many per chain:", "",
            "| T | tau_Q(numba) [sweeps] | numba | OpenCL (PoCL) | OpenCL / numba |", "|---|---|---|---|---|"]
            + [f"| {r['temperature']:g} | {r['tau_q']:.2g} ({r['tau_source']}) | {r['harvest_limit_core_hours']:.3g} | "
               f"{o['harvest_limit_core_hours']:.3g} | {o['harvest_limit_core_hours'] / r['harvest_limit_core_hours']:.2f} |"
               for r, o in zip(rows, ocl_rows)]
            + ["", "Target with the OpenCL kernel on the CPU: "
               + (f"{min(o['harvest_limit_core_hours'] for o in ocl_rows if o['temperature'] == 0.15):.3g}-"
                  f"{max(o['harvest_limit_core_hours'] for o in ocl_rows if o['temperature'] == 0.15):.3g} "
                  "core-hours per structure at T = 0.15: "
                  + ("**met**" if max(o["harvest_limit_core_hours"] for o in ocl_rows if o["temperature"] == 0.15)
                     <= TARGET_CORE_HOURS else "**not met**") + "."), ""])
    for speed in (1, 2, 4):
        cells = [f"{lo_ * sp / spacing / speed:.3g}-{hi / spacing * sp / speed:.3g}"
                 for sp in (2, 3, 4) for lo_ in [lo]]
        lines.append(f"| {speed}x | " + " | ".join(cells) + " |")
    lines += ["",
              f"`python {' '.join(sys.argv)}`, commit {commit}, "
              f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}"]
    write_text_atomic(RESULTS / "swap_harvest_cost.md", "\n".join(lines) + "\n")
    write_json_atomic(RESULTS / "swap_harvest_cost.json", dict(
        ms_per_sweep=args.ms_per_sweep, throughput_measurement=measured, opencl_tau_ratio=ratio,
        opencl_rows=ocl_rows, spacing=spacing, n_eq_tau=n_eq, rows=rows, measured_tau=taus,
        command="python " + " ".join(sys.argv), commit=commit, load_average=list(os.getloadavg()),
        machine=machine_info()))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
