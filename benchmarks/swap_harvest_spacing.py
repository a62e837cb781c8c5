"""How fast do successive harvested structures of one swap-MC chain decorrelate? (issue 14, item 1)

``tglassmlp.physics.equilibrium_structures`` keeps an equilibrated chain running and takes a structure every
``swap.harvest_spacing`` tau_Q. The default is chosen here from a measurement: one equilibrium chain at T (the
GlassBench T = 0.23 equilibrium structure heated to T, d adapted, then a burn-in of ``--burn-in`` tau_Q with d
frozen), snapshots of the unwrapped positions every ``--every`` tau_Q for ``--length`` tau_Q; then for every
separation Delta the cage-frame overlap q(t0, t0 + Delta) of each PAIR of snapshots Delta apart (the quantity the
harvest report records between successive structures: one pair, no average over time origins): its mean over t0,
its spread, its largest value. tau_Q is both the anchor value (benchmarks/results/swap_glassbench_anchor.md) and
the 1/e crossing of the mean measured here.

The chain is checkpointed in ``outputs/`` (a rerun resumes; a finished part only re-reports).

    nice -n 10 .venv/bin/python benchmarks/swap_harvest_spacing.py --temperature 0.4
    nice -n 10 .venv/bin/python benchmarks/swap_harvest_spacing.py --temperature 0.3
    .venv/bin/python benchmarks/swap_harvest_spacing.py --report

Results: ``benchmarks/results/swap_harvest_spacing.{md,json}`` (parts: ``swap_harvest_spacing_T<T>.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from tglassmlp.atomic import save_npz_atomic, write_json_atomic, write_text_atomic  # noqa: E402
from tglassmlp.data.glassbench import read_glassbench  # noqa: E402
from tglassmlp.physics.swap_mc import (  # noqa: E402
    DECAY_LEVEL,
    SwapMonteCarlo,
    load_swap_settings,
    self_overlap,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GLASSBENCH = ROOT.parent / "shared" / "data" / "glassbench" / "N1290T0.23_202_tc05.npz"
# cage-frame tau_Q [sweeps] of equilibrium chains from the GlassBench structure (swap_glassbench_anchor.md)
ANCHOR_TAU_Q = {0.4: 1.23e4, 0.3: 4.07e4, 0.25: 1.04e5, 0.23: 1.96e5}
SEED = 21


def pair_overlaps(snaps, lag: int, box: float, settings) -> np.ndarray:
    """Cage-frame overlap of every pair of snapshots ``lag`` apart (one value per time origin)."""
    out = []
    for o in range(len(snaps) - lag):
        _, q = self_overlap(np.stack([snaps[o], snaps[o + lag]]), 1.0, settings.overlap_a, 1, box=box,
                            cage_radius=settings.cage_radius)
        out.append(q[1])
    return np.asarray(out)


def run_part(temperature: float, every_tau: float, length_tau: float, burn_tau: float) -> dict:
    settings = load_swap_settings()
    tau = ANCHOR_TAU_Q[temperature]
    every = int(round(every_tau * tau / 100.0)) * 100
    n_snap = int(round(length_tau / every_tau)) + 1
    burn = int(round(burn_tau * tau / 100.0)) * 100
    ckpt = ROOT / "outputs" / f"swap_harvest_spacing_T{temperature:g}.npz"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    gb = read_glassbench(GLASSBENCH)
    mc = SwapMonteCarlo(temperature, seed=SEED)
    t0 = time.perf_counter()
    if ckpt.is_file():
        with np.load(ckpt) as z:
            mc.reset(gb.positions, gb.types, gb.box)
            mc.load_state_dict({k: z[k] for k in z.files if k not in ("snaps", "energies", "meta")})
            snaps, energies = list(z["snaps"]), list(z["energies"])
            meta = json.loads(str(z["meta"]))
        print(f"resumed {ckpt}: {len(snaps)} snapshots", flush=True)
    else:
        mc.reset(gb.positions, gb.types, gb.box)
        mc.adapt(settings.adapt_sweeps_at_target)
        mc.run(burn)
        mc.check_energy()
        snaps, energies, meta = [mc.unwrapped_positions], [mc.energy / mc.types.size], dict(cpu_s=0.0)
    cpu0 = time.process_time() - meta["cpu_s"]
    last = time.perf_counter()
    while len(snaps) < n_snap:
        mc.run(every)
        snaps.append(mc.unwrapped_positions)
        energies.append(mc.energy / mc.types.size)
        if time.perf_counter() - last > 120 or len(snaps) == n_snap:
            mc.check_energy()
            meta["cpu_s"] = time.process_time() - cpu0
            save_npz_atomic(ckpt, dict(snaps=np.stack(snaps), energies=np.asarray(energies),
                                       meta=np.array(json.dumps(meta)), **mc.state_dict()))
            last = time.perf_counter()
            print(f"T={temperature:g}: {len(snaps)}/{n_snap} snapshots, E/N={energies[-1]:.4f}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    sweeps_measured = every * (n_snap - 1)
    rows = []
    for lag in range(1, n_snap):
        q = pair_overlaps(snaps, lag, mc.box, settings)
        rows.append(dict(lag_sweeps=lag * every, lag_tau=lag * every / tau, n_pairs=int(q.size),
                         mean=float(q.mean()), std=float(q.std(ddof=1)) if q.size > 1 else float("nan"),
                         max=float(q.max()), min=float(q.min())))
    lags = np.array([0.0] + [r["lag_sweeps"] for r in rows])
    means = np.array([1.0] + [r["mean"] for r in rows])
    below = np.flatnonzero(means <= DECAY_LEVEL)
    tau_here = None
    if below.size:
        k = below[0]
        tau_here = float(lags[k - 1] + (lags[k] - lags[k - 1]) * (means[k - 1] - DECAY_LEVEL)
                         / (means[k - 1] - means[k]))
    return dict(temperature=temperature, seed=SEED, n_particles=int(mc.types.size), tau_q_anchor=tau,
                tau_q_here=tau_here, snapshot_every_sweeps=every, n_snapshots=n_snap, burn_in_sweeps=burn,
                sweeps_measured=sweeps_measured, energy_mean=float(np.mean(energies)),
                energy_halves=[float(np.mean(h)) for h in np.array_split(np.asarray(energies), 2)],
                acceptance_swap=mc.acceptance_swap, max_displacement=mc.max_displacement,
                cpu_s=meta["cpu_s"], ms_per_sweep_cpu=1e3 * meta["cpu_s"] / max(sweeps_measured, 1),
                rows=rows, command="python " + " ".join(sys.argv),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                load_average=list(os.getloadavg()), machine=machine_info())


def report():
    parts = sorted(RESULTS.glob("swap_harvest_spacing_T*.json"))
    if not parts:
        raise SystemExit("no parts yet")
    data = [json.loads(p.read_text()) for p in parts]
    lines = ["# Overlap between successive harvested structures vs their spacing (benchmarks/swap_harvest_spacing.py)",
             "",
             "One equilibrium swap-MC chain per T (N = 1290; GlassBench T = 0.23 structure heated to T, burn-in with d "
             "frozen), snapshots every `every` sweeps. For each separation Delta: the cage-frame overlap q of each "
             "pair of snapshots Delta apart (a = 0.3, cage radius 1.4: the criterion's measure, one pair, no "
             "average over origins), over all pairs: mean, standard deviation, largest. Delta in units of the "
             "anchor tau_Q (swap_glassbench_anchor.md).", ""]
    for d in sorted(data, key=lambda d: -d["temperature"]):
        lines += [f"## T = {d['temperature']:g}", "",
                  f"- tau_Q anchor {d['tau_q_anchor']:.3g} sweeps; 1/e crossing of the mean pair overlap here: "
                  f"{d['tau_q_here'] and format(d['tau_q_here'], '.3g')} sweeps; {d['sweeps_measured']} sweeps "
                  f"measured after a burn-in of {d['burn_in_sweeps']}; E/N halves "
                  f"{d['energy_halves'][0]:.4f}, {d['energy_halves'][1]:.4f}; {d['ms_per_sweep_cpu']:.2f} ms CPU "
                  f"per sweep; `{d['command']}`, {d['date']}, load {d['load_average'][0]:.2f}", "",
                  "| Delta [tau_Q] | Delta [sweeps] | pairs | mean q | std q | max q |", "|---|---|---|---|---|---|"]
        for r in d["rows"]:
            lines.append(f"| {r['lag_tau']:.2f} | {r['lag_sweeps']} | {r['n_pairs']} | {r['mean']:.3f} | "
                         f"{r['std']:.3f} | {r['max']:.3f} |")
        lines.append("")
    write_text_atomic(RESULTS / "swap_harvest_spacing.md", "\n".join(lines) + "\n")
    write_json_atomic(RESULTS / "swap_harvest_spacing.json", data)
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--temperature", type=float, choices=sorted(ANCHOR_TAU_Q))
    ap.add_argument("--every", type=float, default=0.25, help="snapshot spacing [anchor tau_Q]")
    ap.add_argument("--length", type=float, default=12.0, help="measured length [anchor tau_Q]")
    ap.add_argument("--burn-in", type=float, default=4.0, help="burn-in with d frozen [anchor tau_Q]")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.temperature is not None:
        part = run_part(args.temperature, args.every, args.length, args.burn_in)
        write_json_atomic(RESULTS / f"swap_harvest_spacing_T{args.temperature:g}.json", part)
    if args.report or args.temperature is not None:
        report()


if __name__ == "__main__":
    main()
