"""Batched OpenCL swap MC (tglassmlp.physics.swap_mc_opencl) next to the numba kernel, in one run.

Writes benchmarks/results/swap_opencl.md and .json (machine, command, commit):

    nice -n 10 .venv/bin/python benchmarks/swap_opencl.py            # ~15 min on 2 loaded cores
    nice -n 10 .venv/bin/python benchmarks/swap_opencl.py --quick    # throughput only, ~2 min (keeps tau_Q)

1. Throughput at N = 1290, T = 0.3 (structure melted and annealed by the numba sampler, d adapted then frozen
   and used by both backends): numba (one thread) and OpenCL on the default device for B = 1, 16, 128 chains,
   interleaved rounds, medians. "Per core" is given two ways: attempted moves per CPU-second of the process
   (process_time counts every thread, including PoCL's; the fair figure on a machine shared with other jobs),
   and moves per wall second divided by the cores the backend may use (numba 1, PoCL its compute units).
2. tau_Q (cage frame, as the equilibration criterion) at --tau-temperature (default 0.4; add another T to the
   results with ``--add-tau --tau-temperature 0.3 --tau-sweeps 80000 --tau-chains 2``) from one common start for both backends: one numba
   chain, and --tau-chains OpenCL chains (Q averaged over chains). Core-seconds per tau_Q use each backend's
   measured moves per CPU-second (OpenCL: B = 128).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402
from swap_glassbench_anchor import GLASSBENCH  # noqa: E402  (the anchors' start: the authors' T = 0.23 structure)

from tglassmlp.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from tglassmlp.physics import load_system  # noqa: E402
from tglassmlp.physics.swap_mc import (SwapMonteCarlo, _random_start, decorrelation_time,  # noqa: E402
                                       load_swap_settings, self_overlap)
from tglassmlp.physics.swap_mc_opencl import KERNEL_VERSION, BatchedSwapMonteCarlo  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_PARTICLES = 1290
THROUGHPUT_TEMPERATURE = 0.3
BATCHES = (1, 16, 128)
MOVES_PER_TIMING = 1_300_000  # ~1-2 s per timed run
ROUNDS = 5
SNAPSHOTS_PER_RUN = 200


def commit() -> str:
    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "benchmarks/swap_opencl.py"], cwd=root,
                           capture_output=True, text=True).stdout.strip()
    return head + (" (+ uncommitted changes)" if dirty else "")


def prepared(temperature: float, seed: int, sweeps_at_t: int, start: str = "random") -> SwapMonteCarlo:
    """Numba sampler: random start melted at T = 2 (100 sweeps), or the GlassBench T = 0.23 equilibrium structure
    (``start="glassbench"``: near equilibrium at T ~ 0.23-0.3, where a random start would age for longer than
    the run), then ``sweeps_at_t`` at T with d adapting."""
    if start == "glassbench":
        from tglassmlp.data.glassbench import read_glassbench

        gb = read_glassbench(GLASSBENCH)
        mc = SwapMonteCarlo(temperature, seed=seed).reset(gb.positions, gb.types, gb.box)
    else:
        system = load_system()
        box = system.box_for(N_PARTICLES)
        rng = np.random.default_rng(seed)
        pos, types = _random_start(N_PARTICLES, box, system.composition_for(N_PARTICLES), rng)
        mc = SwapMonteCarlo(2.0, seed=seed).reset(pos, types, box)
        mc.adapt(100)
    mc.temperature = temperature
    mc.adapt(sweeps_at_t)
    mc.reset_counters()
    return mc


def timed(run, moves: int):
    c0, w0 = time.process_time(), time.perf_counter()
    run()
    return moves / (time.process_time() - c0), moves / (time.perf_counter() - w0)


def measure_throughput(seed: int) -> dict:
    mc = prepared(THROUGHPUT_TEMPERATURE, seed, 400)
    batched = {}
    for b in BATCHES:
        ocl = BatchedSwapMonteCarlo(THROUGHPUT_TEMPERATURE, seed=seed).reset(
            np.repeat(mc.positions[None], b, axis=0), np.repeat(mc.types[None], b, axis=0), mc.box)
        ocl.max_displacement = mc.max_displacement
        ocl.run(20)  # compile and let the copies diverge
        batched[b] = ocl
    device = batched[1].device
    cores_ocl = int(device.max_compute_units)
    rows = {"numba": []} | {f"opencl_B{b}": [] for b in BATCHES}
    for rnd in range(ROUNDS):
        sweeps = MOVES_PER_TIMING // N_PARTICLES
        rows["numba"].append(timed(lambda: mc.run(sweeps), sweeps * N_PARTICLES))
        for b, ocl in batched.items():
            s = max(2, MOVES_PER_TIMING // (N_PARTICLES * b))
            rows[f"opencl_B{b}"].append(timed(lambda: ocl.run(s), s * N_PARTICLES * b))
        print(f"round {rnd}: " + ", ".join(f"{k} {v[-1][0] / 1e6:.3f}" for k, v in rows.items())
              + " M moves per CPU-s", flush=True)
    out = {}
    for k, v in rows.items():
        v = np.array(v)
        cores = 1 if k == "numba" else cores_ocl
        out[k] = dict(moves_per_cpu_s=float(np.median(v[:, 0])), moves_per_wall_s=float(np.median(v[:, 1])),
                      cores=cores, moves_per_wall_s_per_core=float(np.median(v[:, 1])) / cores,
                      rounds=v.tolist())
    for b, ocl in batched.items():
        out[f"opencl_B{b}"].update(acceptance_displacement=float(np.nanmean(ocl.acceptance_displacement)),
                                   acceptance_swap=float(np.nanmean(ocl.acceptance_swap)),
                                   energy_drift=ocl.check_energy())
    out["numba"].update(acceptance_displacement=mc.acceptance_displacement, acceptance_swap=mc.acceptance_swap)
    out["device"] = f"{device.name} ({device.platform.name}, {cores_ocl} compute units)"
    out["max_displacement"] = mc.max_displacement
    return out


def q_of_run(snaps, spacing, box, settings):
    cage = settings.cage_radius if settings.overlap_frame == "cage" else None
    return self_overlap(np.stack(snaps), spacing, settings.overlap_a, max_origins=settings.max_origins, box=box,
                        cage_radius=cage)


def measure_tau(temperature: float, sweeps: int, n_chains: int, seed: int, prep_sweeps: int,
                start: str = "random") -> dict:
    settings = load_swap_settings()
    mc = prepared(temperature, seed, prep_sweeps, start)
    spacing = max(1, sweeps // SNAPSHOTS_PER_RUN)
    ocl = BatchedSwapMonteCarlo(temperature, seed=seed).reset(
        np.repeat(mc.positions[None], n_chains, axis=0), np.repeat(mc.types[None], n_chains, axis=0), mc.box)
    ocl.max_displacement = mc.max_displacement
    start_energy = mc.energy / N_PARTICLES
    snaps_n, snaps_o = [mc.unwrapped_positions], [ocl.unwrapped_positions]
    cpu = {"numba": 0.0, "opencl": 0.0}
    for _ in range(sweeps // spacing):
        c0 = time.process_time()
        mc.run(spacing)
        c1 = time.process_time()
        ocl.run(spacing)
        cpu["numba"] += c1 - c0
        cpu["opencl"] += time.process_time() - c1
        snaps_n.append(mc.unwrapped_positions)
        snaps_o.append(ocl.unwrapped_positions)
    lags, q_n = q_of_run(snaps_n, spacing, mc.box, settings)
    snaps_o = np.stack(snaps_o)
    q_o = np.mean([q_of_run(snaps_o[:, b], spacing, mc.box, settings)[1] for b in range(n_chains)], axis=0)
    q_each = [decorrelation_time(lags, q_of_run(snaps_o[:, b], spacing, mc.box, settings)[1])
              for b in range(n_chains)]
    e_half = lambda tr: float(np.mean(tr[len(tr) // 2:]))  # noqa: E731
    return dict(temperature=temperature, start=start, sweeps=sweeps, spacing=spacing, opencl_chains=n_chains,
                kernel_version=KERNEL_VERSION,
                prep_sweeps=prep_sweeps, start_energy_per_particle=start_energy,
                max_displacement=mc.max_displacement, overlap_frame=settings.overlap_frame,
                tau_numba=decorrelation_time(lags, q_n), tau_opencl=decorrelation_time(lags, q_o),
                tau_opencl_each=q_each, q_end_numba=float(q_n[-1]), q_end_opencl=float(q_o[-1]),
                energy_second_half_numba=e_half(mc.energy_trace),
                energy_end_opencl=(ocl.energies / N_PARTICLES).tolist(),
                acceptance_numba=[mc.acceptance_displacement, mc.acceptance_swap],
                acceptance_opencl=[float(np.mean(ocl.acceptance_displacement)), float(np.mean(ocl.acceptance_swap))],
                cpu_s=cpu, lags=lags.tolist(), q_numba=q_n.tolist(), q_opencl=q_o.tolist())


def fmt(x, unit=""):
    return "censored" if x is None else f"{x:.3g}{unit}"


def write(out: dict):
    write_json_atomic(RESULTS / "swap_opencl.json", out)
    m, tp = out["machine"], out["throughput"]
    lines = ["# Batched OpenCL swap MC vs the numba kernel", "",
             f"- date: {out['date']}", f"- command: `{out['command']}`", f"- commit: {out['commit']} (numba kernel "
             f"and OpenCL kernel version {out.get('kernel_version', 1)} both from this commit)", f"- machine: {m['uname']}; {m['cpu_model']}; "
             f"{m['usable_cores']} usable cores shared with other jobs; load average at start "
             f"{', '.join(f'{x:.2f}' for x in out['load_average'])}", f"- OpenCL device: {tp['device']}", "",
             f"## Throughput, N = {N_PARTICLES}, T = {THROUGHPUT_TEMPERATURE}, swaps on, d = "
             f"{tp['max_displacement']:.4f} (medians of {ROUNDS} interleaved rounds; measured)", "",
             "| backend | M moves per CPU-s | M moves per wall-s | cores | M moves per wall-s per core | "
             "vs numba (per CPU-s) | acceptance displ. / swap |", "|---|---|---|---|---|---|---|"]
    ref = tp["numba"]["moves_per_cpu_s"]
    for k in ["numba"] + [f"opencl_B{b}" for b in BATCHES]:
        r = tp[k]
        lines.append(f"| {k} | {r['moves_per_cpu_s'] / 1e6:.3f} | {r['moves_per_wall_s'] / 1e6:.3f} | {r['cores']} | "
                     f"{r['moves_per_wall_s_per_core'] / 1e6:.3f} | {r['moves_per_cpu_s'] / ref:.2f} | "
                     f"{r['acceptance_displacement']:.3f} / {r['acceptance_swap']:.4f} |")
    taus = out.get("tau") or []
    for t in [taus] if isinstance(taus, dict) else taus:
        lines += ["", f"## tau_Q at T = {t['temperature']} ({t['overlap_frame']} frame; measured)", "",
                  f"Command: `{t.get('command', out['command'])}`.", "",
                  (f"Common start: the GlassBench T = 0.23 equilibrium structure (E/N "
                     f"{t['start_energy_per_particle']:.4f} after {t['prep_sweeps']} sweeps at T with d adapting: near "
                     "equilibrium at this T)" if t.get("start") == "glassbench" else
                     f"Common start: random, melted at T = 2, {t['prep_sweeps']} sweeps at T with d adapting (E/N "
                     f"{t['start_energy_per_particle']:.4f}: still ageing, so both tau are those of the same ageing "
                     "start)")
                  + f", then d = {t['max_displacement']:.4f} frozen; {t['sweeps']} sweeps each, snapshots every "
                  f"{t['spacing']}. OpenCL: {t['opencl_chains']} chains, Q averaged over them."
                  + ("" if t.get("kernel_version", 1) == out.get("kernel_version", 1) else
                     f" Measured with OpenCL kernel version {t.get('kernel_version', 1)} (commit "
                     f"{t.get('commit', 'of its command')}), kept: version {out.get('kernel_version', 1)} makes "
                     "moves of the same law (same proposals and acceptance; other summation order and memory layout), "
                     "so tau_Q in sweeps stands; the core-seconds use this run's throughput."), "",
                  "| backend | tau_Q [sweeps] | Q at the end | core-s per tau_Q | E/N |", "|---|---|---|---|---|"]
        for k, tau, q, e in (("numba", t["tau_numba"], t["q_end_numba"], t["energy_second_half_numba"]),
                             ("opencl", t["tau_opencl"], t["q_end_opencl"], float(np.mean(t["energy_end_opencl"])))):
            rate = tp["numba" if k == "numba" else "opencl_B128"]["moves_per_cpu_s"]
            cs = None if tau is None else tau * N_PARTICLES / rate
            lines.append(f"| {k} | {fmt(tau)} | {q:.3f} | {fmt(cs)} | {e:.4f} |")
        lines += ["", f"OpenCL tau per chain: {', '.join(fmt(x) for x in t['tau_opencl_each'])}. Core-seconds per "
                  "tau = tau x N / (moves per CPU-s of the throughput table), OpenCL at B = 128. E/N: numba = mean "
                  "over the second half of its run; OpenCL = final value, mean over the chains."]
    write_text_atomic(RESULTS / "swap_opencl.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="throughput only")
    ap.add_argument("--tau-temperature", type=float, default=0.4)
    ap.add_argument("--tau-sweeps", type=int, default=30000)
    ap.add_argument("--tau-chains", type=int, default=4)
    ap.add_argument("--tau-prep-sweeps", type=int, default=2000)
    ap.add_argument("--tau-start", choices=("random", "glassbench"), default="random",
                    help="start of the tau_Q runs: a melted random configuration, or the GlassBench T = 0.23 "
                         "structure (near equilibrium at T = 0.23-0.3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--add-tau", action="store_true",
                    help="only measure tau_Q at --tau-temperature and add it to the existing results")
    args = ap.parse_args(argv)
    command = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    if args.add_tau:
        out = json.loads((RESULTS / "swap_opencl.json").read_text())
        taus = out.get("tau") or []
        taus = [taus] if isinstance(taus, dict) else taus
        extra = measure_tau(args.tau_temperature, args.tau_sweeps, args.tau_chains, args.seed, args.tau_prep_sweeps,
                            args.tau_start)
        extra.update(command=command, commit=commit(), load_average=os.getloadavg())
        out["tau"] = [t for t in taus if t["temperature"] != args.tau_temperature] + [extra]
        write(out)
        return
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               command=command,
               commit=commit(), machine=machine_info(numpy=np.__version__), load_average=os.getloadavg())
    out["kernel_version"] = KERNEL_VERSION
    out["throughput"] = measure_throughput(args.seed)
    if args.quick and (RESULTS / "swap_opencl.json").is_file():  # keep the tau_Q sections of the last full run
        prev = json.loads((RESULTS / "swap_opencl.json").read_text())
        kept = prev.get("tau") or []
        out["tau"] = [kept] if isinstance(kept, dict) else kept
        for t in out["tau"]:  # measured by the run that wrote the file, unless it says otherwise
            t.setdefault("command", prev["command"])
            t.setdefault("commit", prev["commit"])
    if not args.quick:
        out["tau"] = [measure_tau(args.tau_temperature, args.tau_sweeps, args.tau_chains, args.seed,
                                  args.tau_prep_sweeps, args.tau_start)]
    write(out)


if __name__ == "__main__":
    main()
