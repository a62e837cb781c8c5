"""The inherent-structure energy e_IS(T) from independent swap-MC cooling cascades (issue 14, "What it must show").

Cascade k (seed k): a random start melted and annealed to the top temperature, then each lower temperature starts
from the same cascade's final structure one rung up (``equilibrium_structure(T, initial=..., seed=k)``: d adapted
at T, then production in doubling blocks until the cage-frame criterion holds or ``--max-sweeps``). The final
structure of every chain is minimised (``inherent_structure``) and its energy per particle is e_IS. Every chain
records whether the criterion holds (a structure whose chain fails it is an upper bound on e_IS of an ageing
system, never an equilibrium value). Rungs run rung by rung across the cascades (so a time limit leaves complete
rungs), each chain checkpointed in ``outputs/`` (a rerun resumes; a finished chain only re-reports).

    nice -n 10 .venv/bin/python benchmarks/swap_eis_cascades.py --temperatures 0.4 0.35 0.3 --cascades 1 2 3
    .venv/bin/python benchmarks/swap_eis_cascades.py --report

Results: ``benchmarks/results/swap_eis_cascades.{md,json}`` (parts: ``swap_eis_cascades_T<T>_c<k>.json``; final
structures: ``swap_eis_structures/T<T>_c<k>.npz``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from tglassmlp.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from tglassmlp.physics.minimize import inherent_structure  # noqa: E402
from tglassmlp.physics.potential import potential_energy  # noqa: E402
from tglassmlp.physics.swap_mc import equilibrium_structure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N_PARTICLES = 1290


def part_path(temperature, cascade) -> Path:
    return RESULTS / f"swap_eis_cascades_T{temperature:g}_c{cascade}.json"


def final_path(temperature, cascade) -> Path:
    # committed with the results (~20 kB each), so that a later session continues a cascade one rung down
    # without its chain checkpoints (those stay in outputs/)
    return RESULTS / "swap_eis_structures" / f"T{temperature:g}_c{cascade}.npz"


def final_structure(temperature, cascade):
    """The stored final structure of a finished chain, or None."""
    path = final_path(temperature, cascade)
    if not path.is_file():
        return None
    with np.load(path) as z:
        return z["positions"], z["types"], float(z["box"])


def run_chain(temperature, cascade, above, max_sweeps) -> dict:
    initial = None if above is None else final_structure(above, cascade)
    if above is not None and initial is None:
        raise RuntimeError(f"cascade {cascade}: no final structure at T = {above:g} to start T = {temperature:g} from")
    ckpt = ROOT / "outputs" / f"swap_eis_cascades_T{temperature:g}_c{cascade}_chain.npz"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    cpu0, t0 = time.process_time(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the flag is in the report and the table
        pos, types, box, rep = equilibrium_structure(temperature, N_PARTICLES, seed=cascade, initial=initial,
                                                     max_sweeps=max_sweeps, checkpoint=ckpt, progress=True)
    from tglassmlp.atomic import save_npz_atomic

    final_path(temperature, cascade).parent.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(final_path(temperature, cascade), dict(positions=pos, types=types, box=np.float64(box)))
    n = types.size
    x_is = inherent_structure(pos, types, box)
    return dict(temperature=temperature, cascade=cascade, started_from=above, criterion_met=rep.criterion_met,
                reasons=rep.reasons, sweeps_production=rep.sweeps_production, sweeps_total=rep.sweeps_total,
                tau_q=rep.tau_overlap, window_over_tau=(rep.window_sweeps / rep.tau_overlap
                                                        if rep.tau_overlap else None),
                energy_halves=list(rep.energy_halves), stationarity_z=rep.stationarity_z,
                energy_final=rep.energy_final, e_is=potential_energy(x_is, types, box) / n,
                acceptance_swap=rep.acceptance_swap, chain_wall_s=rep.wall_time_s,
                cpu_s_this_call=time.process_time() - cpu0, wall_s_this_call=time.perf_counter() - t0,
                max_sweeps=max_sweeps, command="python " + " ".join(sys.argv),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                load_average=list(os.getloadavg()), machine=machine_info())


def report():
    parts = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("swap_eis_cascades_T*_c*.json"))]
    if not parts:
        raise SystemExit("no parts yet")
    by_t = {}
    for d in parts:
        by_t.setdefault(d["temperature"], []).append(d)
    lines = ["# e_IS(T) from independent swap-MC cooling cascades (benchmarks/swap_eis_cascades.py)", "",
             f"N = {N_PARTICLES}; cascade k = seed k; each T below the top starts from the same cascade's final "
             "structure one rung up; e_IS = energy per particle of the minimised final structure. 'met' = the "
             "chain's cage-frame criterion holds (window >= 10 tau_Q, stationary energy); an unmet chain's e_IS "
             "is an upper bound (ageing), not an equilibrium value.", "",
             "| T | cascades | criterion met | e_IS per cascade | e_IS mean +- s.e. (met only) | tau_Q [sweeps] | "
             "window / tau_Q | E/N (window halves) | production sweeps |", "|---|---|---|---|---|---|---|---|---|"]
    for t in sorted(by_t, reverse=True):
        ds = sorted(by_t[t], key=lambda d: d["cascade"])
        met = [d for d in ds if d["criterion_met"]]
        e_met = np.array([d["e_is"] for d in met])
        stat = (f"{e_met.mean():.4f} +- {e_met.std(ddof=1) / np.sqrt(e_met.size):.4f} ({e_met.size})"
                if e_met.size >= 2 else (f"{e_met[0]:.4f} (1)" if e_met.size else "-"))
        lines.append(
            f"| {t:g} | {', '.join(str(d['cascade']) for d in ds)} | "
            f"{', '.join('yes' if d['criterion_met'] else 'no' for d in ds)} | "
            f"{', '.join(format(d['e_is'], '.4f') for d in ds)} | {stat} | "
            f"{', '.join(format(d['tau_q'], '.3g') if d['tau_q'] else '>window' for d in ds)} | "
            f"{', '.join(format(d['window_over_tau'], '.1f') if d['window_over_tau'] else '-' for d in ds)} | "
            f"{'; '.join('%.4f, %.4f' % tuple(d['energy_halves']) for d in ds)} | "
            f"{', '.join(str(d['sweeps_production']) for d in ds)} |")
    lines += ["", "Chains (command, date, load, reasons when unmet):", ""]
    for d in sorted(parts, key=lambda d: (-d["temperature"], d["cascade"])):
        lines.append(f"- T = {d['temperature']:g}, cascade {d['cascade']} (from {d['started_from'] or 'random start'}):"
                     f" `{d['command']}`, {d['date']}, load {d['load_average'][0]:.2f}, chain wall "
                     f"{d['chain_wall_s'] / 60:.1f} min; " + ("criterion met" if d["criterion_met"]
                                                             else "NOT met: " + "; ".join(d["reasons"])))
    write_text_atomic(RESULTS / "swap_eis_cascades.md", "\n".join(lines) + "\n")
    write_json_atomic(RESULTS / "swap_eis_cascades.json", parts)
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.4, 0.35, 0.3])
    ap.add_argument("--cascades", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--max-sweeps", type=int, nargs="+", default=[512000],
                    help="production cap per rung (one value for all, or one per temperature)")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    temps = sorted(args.temperatures, reverse=True)
    caps = args.max_sweeps * len(temps) if len(args.max_sweeps) == 1 else args.max_sweeps
    if len(caps) != len(temps):
        raise SystemExit("--max-sweeps: give one value or one per temperature")
    if not args.report:
        for k, t in enumerate(temps):
            for c in args.cascades:
                part = run_chain(t, c, temps[k - 1] if k else None, caps[k])
                write_json_atomic(part_path(t, c), part)
                print(f"T={t:g} cascade {c}: met={part['criterion_met']} e_IS={part['e_is']:.4f}", flush=True)
    report()


if __name__ == "__main__":
    main()
