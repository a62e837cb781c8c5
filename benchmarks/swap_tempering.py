"""Does parallel tempering (replica exchange in T) speed up swap Monte Carlo at T_g = 0.15 (issue 3)?

Same CPU budget, two ways to spend it (N = 1290, default swap settings):

* ``tempering``: R replicas on a geometric ladder T_low .. T_high, each a ``SwapMonteCarlo`` chain. Every
  ``exchange_every`` sweeps each replica runs at its slot's T and frozen step d, then neighbouring slots
  (even pairs, odd pairs alternately) exchange replicas with the replica-exchange Metropolis rule
  min(1, exp[(1/T_s - 1/T_s+1)(E_s - E_s+1)]). Recorded: E/N of every slot, which replica holds which slot
  (the walk of each replica in T), exchange acceptance per pair, and "tours": a replica arriving at the
  bottom slot after its last visit to the top (it brings a configuration that was decorrelated at T_high).
* ``direct``: one chain at T_low (the ``equilibrium_structure`` route without the criterion loop).

Both start from random starts melted and annealed with the protocol of ``conf/swap/default.yaml`` (the
replica at slot s is annealed to the slot's T), and both stop after ``--cpu-s`` CPU seconds of the run
itself (``time.process_time``), so running the two parts side by side on a loaded machine stays fair.

    nice -n 10 .venv/bin/python benchmarks/swap_tempering.py --part tempering &   # ~25 min of one core
    nice -n 10 .venv/bin/python benchmarks/swap_tempering.py --part direct         # ~25 min of one core
    .venv/bin/python benchmarks/swap_tempering.py --part report    # -> results/swap_tempering.{md,png}
    .venv/bin/python benchmarks/swap_tempering.py --quick          # smoke test: 4 replicas, ~1 min

Full results: ``benchmarks/results/swap_tempering.{md,png}``; per part ``swap_tempering_<part>.json`` (numbers)
and ``swap_tempering_<part>.npz`` (the traces: E/N per slot and round as float32, slot holders as int8).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from tglassmlp.atomic import save_npz_atomic, write_json_atomic, write_text_atomic  # noqa: E402
from tglassmlp.physics.swap_mc import SwapMonteCarlo, _random_start, load_swap_settings  # noqa: E402
from tglassmlp.physics.system import resolve_system  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N_PARTICLES = 1290
# ladder: 28 rungs from 0.15 to 0.4 give dT/T = 3.7 % per rung. With c_v ~ 1.2 per particle the mean total
# energies of neighbouring rungs are then ~1.5 standard deviations apart: ~30 % exchange acceptance
# (measured: 0.29-0.36 on every pair)
DEFAULTS = dict(replicas=28, t_low=0.15, t_high=0.4, exchange_every=10, cpu_s=1500.0, seed=100)
QUICK = dict(replicas=4, t_low=0.3, t_high=0.4, exchange_every=10, cpu_s=20.0, seed=100)


def prepared_chain(temperature, seed, settings, system):
    """A random start melted and annealed to ``temperature`` with d adapted there (frozen afterwards)."""
    rng = np.random.default_rng(seed)
    box = system.box_for(N_PARTICLES)
    pos, types = _random_start(N_PARTICLES, box, system.composition_for(N_PARTICLES), rng)
    mc = SwapMonteCarlo(settings.melt_temperature, system, rng=rng, settings=settings)
    mc.reset(pos, types, box)
    mc.adapt(settings.melt_sweeps)
    t_hi = settings.melt_temperature
    for k in range(1, settings.anneal_steps + 1):
        mc.temperature = t_hi * (temperature / t_hi) ** (k / settings.anneal_steps)
        mc.adapt(settings.anneal_sweeps)
    mc.adapt(settings.adapt_sweeps_at_target)
    mc.reset_counters()
    return mc


def run_tempering(replicas, t_low, t_high, exchange_every, cpu_s, seed, progress=True):
    settings, system = load_swap_settings(), resolve_system(None)
    temps = t_low * (t_high / t_low) ** (np.arange(replicas) / (replicas - 1))
    chains = [prepared_chain(t, seed + r, settings, system)
              for r, t in enumerate(tqdm(temps, desc="prepare replicas", disable=not progress))]
    slot_d = [c.max_displacement for c in chains]  # d frozen per slot (adapted at that T)
    rep_at = np.arange(replicas)  # replica held by each slot
    last_end = np.zeros(replicas, dtype=np.int8)  # +1: last visited the top slot, -1: the bottom one
    tours = []  # (round, replica) of arrivals at the bottom after a visit to the top
    att, acc = np.zeros(replicas - 1), np.zeros(replicas - 1)
    energies, holders = [], []
    rng = np.random.default_rng(seed + 10_000)
    c0 = time.process_time()
    rounds = 0
    bar = tqdm(total=int(cpu_s), desc="tempering [CPU s]", disable=not progress)
    while time.process_time() - c0 < cpu_s:
        for s in range(replicas):
            chain = chains[rep_at[s]]
            chain.temperature, chain.max_displacement = temps[s], slot_d[s]
            chain.run(exchange_every)
        e = np.array([chains[rep_at[s]].energy for s in range(replicas)])
        for s in range(rounds % 2, replicas - 1, 2):
            att[s] += 1
            x = (1.0 / temps[s] - 1.0 / temps[s + 1]) * (e[s] - e[s + 1])
            if x >= 0 or rng.random() < math.exp(x):
                acc[s] += 1
                rep_at[s], rep_at[s + 1] = rep_at[s + 1], rep_at[s]
                e[s], e[s + 1] = e[s + 1], e[s]
        if last_end[rep_at[0]] == 1:
            tours.append((rounds, int(rep_at[0])))
        last_end[rep_at[0]], last_end[rep_at[-1]] = -1, 1
        energies.append(e / N_PARTICLES)
        holders.append(rep_at.copy())
        rounds += 1
        bar.n = min(int(time.process_time() - c0), int(cpu_s))
        bar.set_postfix(tours=len(tours), E_bottom=f"{e[0] / N_PARTICLES:.4f}", refresh=False)
        bar.refresh()
    bar.close()
    cpu = time.process_time() - c0
    return dict(temperatures=temps.tolist(), slot_max_displacement=slot_d, rounds=rounds,
                sweeps_per_replica=rounds * exchange_every, sweeps_total=rounds * exchange_every * replicas,
                cpu_s=cpu, exchange_acceptance=(acc / np.maximum(att, 1)).tolist(), tours=tours,
                slot_energy=np.asarray(energies, dtype=np.float32), slot_holder=np.asarray(holders, dtype=np.int8),
                swap_acceptance_bottom=[chains[rep_at[0]].acceptance_swap])


def run_direct(t_low, cpu_s, seed, chunk=100, progress=True, **_):
    settings, system = load_swap_settings(), resolve_system(None)
    chain = prepared_chain(t_low, seed, settings, system)
    c0 = time.process_time()
    bar = tqdm(total=int(cpu_s), desc="direct [CPU s]", disable=not progress)
    while time.process_time() - c0 < cpu_s:
        chain.run(chunk)
        bar.n = min(int(time.process_time() - c0), int(cpu_s))
        bar.refresh()
    bar.close()
    cpu = time.process_time() - c0
    trace = chain.energy_trace
    return dict(temperature=t_low, sweeps_total=int(trace.size * settings.record_every), cpu_s=cpu,
                energy_trace=np.asarray(trace[::chunk], dtype=np.float32), trace_spacing=chunk * settings.record_every,
                acceptance_swap=chain.acceptance_swap)


TRACES = ("slot_energy", "slot_holder", "energy_trace")


def save_part(out: Path, part: str, res: dict):
    """Numbers to ``swap_tempering_<part>.json``, traces to ``swap_tempering_<part>.npz`` (both atomic)."""
    save_npz_atomic(out / f"swap_tempering_{part}.npz", {k: res[k] for k in TRACES if k in res}, compressed=True)
    write_json_atomic(out / f"swap_tempering_{part}.json", {k: v for k, v in res.items() if k not in TRACES})


def load_part(out: Path, part: str) -> dict:
    res = json.loads((out / f"swap_tempering_{part}.json").read_text())
    with np.load(out / f"swap_tempering_{part}.npz") as z:
        res.update({k: z[k] for k in z.files})
    return res


def report(out: Path, exchange_every: int):
    tp, dr = (load_part(out, part) for part in ("tempering", "direct"))
    e = np.asarray(tp["slot_energy"])
    temps = np.asarray(tp["temperatures"])
    r = len(temps)
    sweeps_total_axis = (np.arange(e.shape[0]) + 1) * exchange_every * r  # all replicas' sweeps so far
    de = np.asarray(dr["energy_trace"])
    d_axis = (np.arange(de.size) + 1) * dr["trace_spacing"]
    quarter = e.shape[0] // 4
    dq = de.size // 4
    lines = [
        "# Parallel tempering vs a single chain at T = 0.15 (benchmarks/swap_tempering.py)", "",
        f"- date: {tp['date']}; machine: {tp['machine']['cpu_model']} ({tp['machine']['usable_cores']} cores, "
        "shared); both parts niced, side by side, budget in CPU seconds of one core", "",
        f"- tempering: {r} replicas, T = {temps[0]:g} .. {temps[-1]:g} geometric, exchange every "
        f"{exchange_every} sweeps; {tp['rounds']} rounds = {tp['sweeps_per_replica']} sweeps per replica = "
        f"{tp['sweeps_total']:.3g} sweeps in all, {tp['cpu_s']:.0f} CPU s",
        f"- exchange acceptance per neighbouring pair: {min(tp['exchange_acceptance']):.2f} .. "
        f"{max(tp['exchange_acceptance']):.2f}",
        f"- tours (a replica reaching T_low after its last visit to T_high): {len(tp['tours'])} "
        f"(rounds, replica): {tp['tours']}",
        f"- direct chain at T = {dr['temperature']:g}: {dr['sweeps_total']:.3g} sweeps in {dr['cpu_s']:.0f} CPU s, "
        f"swap acceptance {dr['acceptance_swap']:.2g}", "",
        "E/N [epsilon] at T_low by quarter of each run (same CPU budget):", "",
        "| quarter | tempering, slot T_low | tempering, slot T_high | direct chain |", "|---|---|---|---|",
    ]
    for q in range(4):
        lines.append(f"| {q + 1} | {e[q * quarter:(q + 1) * quarter, 0].mean():.4f} | "
                     f"{e[q * quarter:(q + 1) * quarter, -1].mean():.4f} | {de[q * dq:(q + 1) * dq].mean():.4f} |")
    lines += ["", f"Command: {tp['command']} and {dr['command']}", ""]
    write_text_atomic(out / "swap_tempering.md", "\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(sweeps_total_axis, e[:, 0], lw=0.6, label=f"tempering, slot T = {temps[0]:g}")
    ax[0].plot(d_axis, de, lw=0.6, label=f"direct chain, T = {dr['temperature']:g}")
    ax[0].set(xlabel="sweeps of all replicas together (CPU cost)", ylabel="E/N [epsilon]", xscale="log")
    ax[0].legend()
    holder = np.asarray(tp["slot_holder"])
    slot_of = np.argsort(holder, axis=1)  # slot of each replica per round
    rounds_axis = (np.arange(holder.shape[0]) + 1) * exchange_every
    for rep in range(0, r, max(1, r // 7)):
        ax[1].plot(rounds_axis, temps[slot_of[:, rep]], lw=0.5, label=f"replica {rep}")
    ax[1].set(xlabel="sweeps per replica", ylabel="T of the replica's slot [epsilon]")
    ax[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    tmp = out / "swap_tempering.png.tmp"
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, out / "swap_tempering.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["tempering", "direct", "report", "all"], default="all")
    p.add_argument("--quick", action="store_true", help="4 replicas at T = 0.3-0.4, 20 CPU s each")
    p.add_argument("--out", type=Path, default=None)
    for k, v in DEFAULTS.items():
        p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=None)
    a = p.parse_args(argv)
    base = QUICK if a.quick else DEFAULTS
    cfg = {k: (getattr(a, k) if getattr(a, k) is not None else v) for k, v in base.items()}
    out = a.out or (ROOT / "outputs" / "swap_tempering_quick" if a.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    parts = ["tempering", "direct", "report"] if a.part == "all" else [a.part]
    for part in parts:
        if part == "report":
            report(out, cfg["exchange_every"])
            print((out / "swap_tempering.md").read_text())
            continue
        res = run_tempering(**cfg) if part == "tempering" else run_direct(**cfg)
        res.update(date=datetime.datetime.now().isoformat(timespec="seconds"), machine=machine_info(),
                   command="python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), settings=cfg,
                   load_average=os.getloadavg())
        save_part(out, part, res)


if __name__ == "__main__":
    main()
