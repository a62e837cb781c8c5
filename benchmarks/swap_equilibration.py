"""Swap Monte Carlo equilibration evidence for the 2D ternary mixture (issue 3).

Stages (each appends to benchmarks/results/swap_equilibration.json after every unit of work, atomically, so a
killed run loses at most the unit in progress; a rerun skips the units already stored):

    tune     which swap settings relax fastest per CPU second: tau_Q at T = 0.3 or 0.4 from one common start
             for several (swap pairs, swap fraction) choices
    chains   independent chains per T (0.4 ... 0.15) with the default settings: final structure -> inherent
             structure energy per particle, the sampler's own equilibration verdict, wall time
    tau      decorrelation time tau_Q in sweeps at 0.4, 0.3, 0.2, 0.15 with and without swaps, each run started
             from the chain structure at that T (censored values are lower bounds)
    spread   structure-to-structure spread of e_IS at T = 0.4 (the error bar of one structure's e_IS)
    report   benchmarks/results/swap_equilibration.md and .png from the json

    nice -n 10 .venv/bin/python benchmarks/swap_equilibration.py tune --temperature 0.3   # then 0.4
    nice -n 10 .venv/bin/python benchmarks/swap_equilibration.py chains --minutes 50
    nice -n 10 .venv/bin/python benchmarks/swap_equilibration.py tau --minutes 20
    nice -n 10 .venv/bin/python benchmarks/swap_equilibration.py spread
    .venv/bin/python benchmarks/swap_equilibration.py report

Times are in sweeps (N attempted moves); wall times are of one core of a shared 2-core machine (niced).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402
from swap_mc import measure_tau  # noqa: E402  (one tau_Q measurement shared with benchmarks/swap_mc.py)

from tglassmlp.atomic import save_npz_atomic, write_json_atomic, write_text_atomic  # noqa: E402
from tglassmlp.physics import inherent_structure, load_system, potential_energy  # noqa: E402
from tglassmlp.physics.swap_mc import SwapMonteCarlo, equilibrium_structure, load_swap_settings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
JSON_PATH = RESULTS / "swap_equilibration.json"
CHECKPOINTS = Path(__file__).resolve().parents[1] / "outputs" / "swap_equilibration"
GLASSBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "glassbench" / "N1290T0.23_202_tc05.npz"

# tune: settings compared at one T from one common start, `sweeps` each; the start is the GlassBench
# T = 0.23 equilibrium structure heated to T for `prep_sweeps` (T = 0.3, the first attempt), or
# equilibrium_structure(T) capped at `prep_sweeps` production sweeps (T = 0.4)
TUNE = {
    0.3: dict(prep="glassbench", prep_sweeps=20000, sweeps=60000, settings={
        "pairs 0-2,1-2 f=0.2 (old default)": dict(swap_pairs=[[0, 2], [1, 2]], swap_fraction=0.2),
        "pairs 0-2 f=0.2": dict(swap_pairs=[[0, 2]], swap_fraction=0.2),
        "pairs 0-2 f=0.5": dict(swap_pairs=[[0, 2]], swap_fraction=0.5),
        "pairs 0-2 f=0.8": dict(swap_pairs=[[0, 2]], swap_fraction=0.8)}),
    0.4: dict(prep="equilibrium_structure", prep_sweeps=40000, sweeps=50000, settings={
        "no swaps (f=0)": dict(swap_pairs=[[0, 2]], swap_fraction=0.0),
        "pairs 0-2,1-2 f=0.2 (old default)": dict(swap_pairs=[[0, 2], [1, 2]], swap_fraction=0.2),
        "pairs 0-2 f=0.1": dict(swap_pairs=[[0, 2]], swap_fraction=0.1),
        "pairs 0-2 f=0.2": dict(swap_pairs=[[0, 2]], swap_fraction=0.2),
        # added after the runs above: neither pair alone gives the speed-up of both
        "pairs 1-2 f=0.2": dict(swap_pairs=[[1, 2]], swap_fraction=0.2),
        "pairs 0-2,1-2 f=0.4": dict(swap_pairs=[[0, 2], [1, 2]], swap_fraction=0.4)}),
}


def load_results() -> dict:
    if JSON_PATH.is_file():
        return json.loads(JSON_PATH.read_text())
    return {}


def save_results(data: dict):
    data["updated"] = datetime.datetime.now().isoformat(timespec="seconds")
    data["machine"] = machine_info()
    data["load_average"] = os.getloadavg()
    write_json_atomic(JSON_PATH, data, default=float)


def glassbench_start():
    from tglassmlp.data import read_glassbench

    gb = read_glassbench(GLASSBENCH)
    return gb.positions, gb.types, gb.box


# ============================================================================== tune
def stage_tune(args):
    temperature = args.temperature
    spec = TUNE[temperature]
    data = load_results()
    tune = data.setdefault(f"tune_T{temperature:g}", {"temperature": temperature, "prep": spec["prep"],
                                                      "prep_sweeps": spec["prep_sweeps"], "sweeps": spec["sweeps"],
                                                      "runs": {}})
    settings = load_swap_settings()
    prep = CHECKPOINTS / f"tune_start_T{temperature:g}.npz"
    if prep.is_file():
        z = np.load(prep)
        pos, types, box, d = z["positions"], z["types"], float(z["box"]), float(z["d"])
    elif spec["prep"] == "glassbench":
        pos, types, box = glassbench_start()
        mc = SwapMonteCarlo(temperature, seed=100, swap_pairs=[[0, 2]], swap_fraction=0.5).reset(pos, types, box)
        mc.adapt(2000)
        mc.run(spec["prep_sweeps"] - 2000)
        pos, types, d = mc.positions, mc.types, mc.max_displacement
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pos, types, box, rep = equilibrium_structure(temperature, 1290, seed=100, max_sweeps=spec["prep_sweeps"],
                                                         swap_pairs=[[0, 2]], swap_fraction=0.2, progress=True)
        d = rep.max_displacement
        tune["prep_report"] = dict(criterion_met=rep.criterion_met, tau_overlap=rep.tau_overlap,
                                   sweeps=rep.sweeps_production, energy_mean=rep.energy_mean)
    if not prep.is_file():
        save_npz_atomic(prep, dict(positions=pos, types=types, box=box, d=d))
    for k, (name, opts) in enumerate(spec["settings"].items()):
        if name in tune["runs"]:
            continue
        mc = SwapMonteCarlo(temperature, seed=200 + k, max_displacement=d, settings=settings, **opts)
        mc.reset(pos, types, box)
        t0 = time.perf_counter()
        mc.run(2000)
        sweep_s = (time.perf_counter() - t0) / 2000
        r = measure_tau(mc, spec["sweeps"], swaps=opts["swap_fraction"] > 0, a=settings.overlap_a)
        r.update(setting=opts, sweep_s=sweep_s, tau_s=None if r["tau"] is None else r["tau"] * sweep_s,
                 energy=mc.energy / len(types), max_displacement=d)
        tune["runs"][name] = r
        print(f"[tune] T={temperature} {name}: tau_Q = {r['tau']} sweeps, {sweep_s * 1e3:.2f} ms/sweep, swap acc "
              f"{r['acceptance_swap']}", flush=True)
        save_results(data)


# ============================================================================== chains
CHAIN_TEMPERATURES = [0.4, 0.3, 0.25, 0.2, 0.15]
# production-sweep cap per T (the run stops earlier once the criterion holds); ~1.3-2 ms per sweep
CHAIN_CAPS = {0.4: 128000, 0.3: 128000, 0.25: 64000, 0.2: 64000, 0.15: 64000}
CHAIN_SEEDS = [1, 2]


def chain_name(temperature, seed):
    return f"T{temperature:g}_s{seed}"


def stage_chains(args):
    """Independent annealing cascades: seed s starts from a random melt at 0.4; each lower T starts from the
    same seed's final structure at the T above (annealing), so the two chains per T share nothing."""
    data = load_results()
    chains = data.setdefault("chains", {})
    n = load_system().composition_for(1290).sum()
    t_start = time.perf_counter()
    if "glassbench_T0.23" not in data:
        pos, types, box = glassbench_start()
        x_is = inherent_structure(pos, types, box)
        data["glassbench_T0.23"] = dict(e=potential_energy(pos, types, box) / n,
                                        e_is=potential_energy(x_is, types, box) / n)
        save_results(data)
    for k, temperature in enumerate(CHAIN_TEMPERATURES):
        for seed in CHAIN_SEEDS:
            name = chain_name(temperature, seed)
            if name in chains:
                continue
            if (time.perf_counter() - t_start) / 60 > args.minutes:
                print(f"[chains] budget of {args.minutes} min spent: stopping before {name}", flush=True)
                return
            initial, start = None, "random start, melted at T = 2, annealed"
            if k > 0:
                prev = chain_name(CHAIN_TEMPERATURES[k - 1], seed)
                z = np.load(CHECKPOINTS / f"{prev}.npz")
                initial, start = (z["positions"], z["types"], float(z["box"])), f"final structure of {prev}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the verdict is stored below
                pos, types, box, rep = equilibrium_structure(
                    temperature, 1290, seed=100 * seed + k, initial=initial, max_sweeps=CHAIN_CAPS[temperature],
                    checkpoint=CHECKPOINTS / f"{name}_checkpoint.npz", progress=True)
            x_is = inherent_structure(pos, types, box)
            e_is = potential_energy(x_is, types, box) / n
            save_npz_atomic(CHECKPOINTS / f"{name}.npz",
                            dict(positions=pos, types=types, box=box, inherent_positions=x_is))
            chains[name] = dict(
                temperature=temperature, seed=seed, start=start, criterion_met=rep.criterion_met,
                reasons=rep.reasons, sweeps_total=rep.sweeps_total, sweeps_production=rep.sweeps_production,
                window_sweeps=rep.window_sweeps, tau_overlap=rep.tau_overlap, tau_energy=rep.tau_energy,
                energy_mean=rep.energy_mean, energy_halves=list(rep.energy_halves),
                stationarity_z=rep.stationarity_z, e_is=e_is, acceptance_swap=rep.acceptance_swap,
                acceptance_displacement=rep.acceptance_displacement, max_displacement=rep.max_displacement,
                wall_s=rep.wall_time_s, settings=dict(swap_pairs=rep.settings["swap_pairs"],
                                                      swap_fraction=rep.settings["swap_fraction"]),
                overlap_lags=np.asarray(rep.overlap_lags).tolist(), overlap=np.asarray(rep.overlap).tolist())
            save_results(data)
            (CHECKPOINTS / f"{name}_checkpoint.npz").unlink(missing_ok=True)
            print(f"[chains] {name}: met={rep.criterion_met} e_IS={e_is:.5f} tau_Q={rep.tau_overlap} "
                  f"sweeps={rep.sweeps_production} wall={rep.wall_time_s:.0f}s", flush=True)


# ============================================================================== tau without swaps
TAU_TEMPERATURES = [0.4, 0.3, 0.2, 0.15]
TAU_SWEEPS = {0.4: 60000, 0.3: 40000, 0.2: 30000, 0.15: 30000}


def stage_tau(args):
    """tau_Q without swaps from the seed-1 chain structure at each T (with swaps: the chain's own tau_Q)."""
    data = load_results()
    taus = data.setdefault("tau_no_swaps", {})
    settings = load_swap_settings()
    t_start = time.perf_counter()
    for temperature in TAU_TEMPERATURES:
        name = chain_name(temperature, CHAIN_SEEDS[0])
        if name in taus or name not in data.get("chains", {}):
            continue
        if (time.perf_counter() - t_start) / 60 > args.minutes:
            print(f"[tau] budget spent: stopping before {name}", flush=True)
            return
        z = np.load(CHECKPOINTS / f"{name}.npz")
        mc = SwapMonteCarlo(temperature, seed=7, max_displacement=data["chains"][name]["max_displacement"])
        mc.reset(z["positions"], z["types"], float(z["box"]))
        taus[name] = measure_tau(mc, TAU_SWEEPS[temperature], swaps=False, a=settings.overlap_a)
        save_results(data)
        print(f"[tau] {name} without swaps: {taus[name]['tau']} (Q_end {taus[name]['q_end']:.3f})", flush=True)


# ============================================================================== e_IS spread
SPREAD_TEMPERATURE = 0.4
SPREAD_SAMPLES = 6


def stage_spread(args):
    """Structure-to-structure spread of e_IS at T = 0.4: SPREAD_SAMPLES structures one tau_Q apart along
    chain 1 (with swaps), each minimised: the error bar of a single structure's e_IS."""
    data = load_results()
    name = chain_name(SPREAD_TEMPERATURE, CHAIN_SEEDS[0])
    c = data["chains"][name]
    spread = data.setdefault("e_is_spread", dict(temperature=SPREAD_TEMPERATURE, chain=name,
                                                 spacing_sweeps=int(math.ceil(c["tau_overlap"])), e_is=[]))
    z = np.load(CHECKPOINTS / f"{name}.npz")
    mc = SwapMonteCarlo(SPREAD_TEMPERATURE, seed=11, max_displacement=c["max_displacement"])
    mc.reset(z["positions"], z["types"], float(z["box"]))
    n = len(z["types"])
    for _ in range(len(spread["e_is"]), SPREAD_SAMPLES):
        mc.run(spread["spacing_sweeps"])
        x_is = inherent_structure(mc.positions, mc.types, mc.box)
        spread["e_is"].append(potential_energy(x_is, mc.types, mc.box) / n)
        save_results(data)
    e = np.array(spread["e_is"])
    print(f"[spread] e_IS at T = {SPREAD_TEMPERATURE}: {e.mean():.5f} +- {e.std(ddof=1):.5f} (sd of {e.size})")


# ============================================================================== report
def _fmt_tau(tau, bound):
    return f"{tau:.3g}" if tau is not None else f"> {bound:.3g}"


def extrapolate_t015(data):
    """Arrhenius fit of the chains' uncensored tau_Q at T >= 0.3, extrapolated to T = 0.15 (labelled as such)."""
    chains = data.get("chains", {})
    pts = [(c["temperature"], c["tau_overlap"]) for c in chains.values()
           if c["temperature"] >= 0.3 and c["tau_overlap"] is not None]
    low = [c for c in chains.values() if c["temperature"] == 0.15]
    if len({t for t, _ in pts}) < 2 or not low:
        return None
    t = np.array([p[0] for p in pts])
    tau = np.array([p[1] for p in pts])
    slope, icpt = np.polyfit(1 / t, np.log(tau), 1)
    tau15 = float(np.exp(icpt + slope / 0.15))
    settings = load_swap_settings()
    sweep_s = model_sweep_s(settings.swap_fraction)
    sweeps = 2 * settings.n_decorrelation * tau15
    return dict(met=sum(bool(c["criterion_met"]) for c in low), points=", ".join(f"T = {a:g}: {b:.3g}" for a, b in pts), activation=float(slope), tau=tau15,
                sweeps=sweeps, sweep_s=sweep_s, hours=sweeps * sweep_s / 3600,
                measured_sweeps=max(c["sweeps_production"] for c in low),
                measured_min=max(sum(c["wall_s"] for c in chains.values() if c["seed"] == s)
                                 for s in CHAIN_SEEDS) / 60)


def model_sweep_s(swap_fraction, n=1290) -> float:
    """Seconds per sweep on an idle core: displacement and swap costs from benchmarks/results/swap_mc.json."""
    bench = json.loads((RESULTS / "swap_mc.json").read_text())
    thr = bench["throughput"]["1290"]
    f0 = bench["settings"]["swap_fraction"]
    t_disp = 1.0 / thr["without_swaps"]
    t_swap = (1.0 / thr["with_swaps"] - (1 - f0) * t_disp) / f0
    return n * ((1 - swap_fraction) * t_disp + swap_fraction * t_swap)


def stage_report(args):
    data = load_results()
    lines = ["# Swap Monte Carlo equilibration (N = 1290)", "",
             f"- updated {data.get('updated')}; machine {data.get('machine', {}).get('cpu_model')}, "
             f"{data.get('machine', {}).get('cpu_count')} cores shared with other developers, runs niced, one at a "
             f"time; commands in the docstring of benchmarks/swap_equilibration.py", ""]
    for tune in [v for k, v in data.items() if k.startswith("tune_T")]:
        start = ("GlassBench T = 0.23 structure + {} sweeps at T" if tune["prep"] == "glassbench" else
                 "equilibrium_structure(T) capped at {} production sweeps").format(tune["prep_sweeps"])
        lines += [f"## Tuning at T = {tune['temperature']} (common start: {start}; {tune['sweeps']} sweeps per "
                  f"setting, one run each)", "",
                  "| setting | ms / sweep (measured, loaded machine) | ms / sweep (cost model, idle core) | "
                  "swap acceptance | tau_Q [sweeps] | tau_Q [s, cost model] |", "|---|---|---|---|---|---|"]
        for name, r in tune["runs"].items():
            sweep_s = r["wall_s"] / r["sweeps"]  # over the whole run: the short pre-timing is load-sensitive
            tau_s = f"{r['tau'] * sweep_s:.0f}" if r["tau"] is not None else f"> {r['wall_s']:.0f}"
            acc = "-" if r["acceptance_swap"] is None else f"{r['acceptance_swap']:.4f}"
            model = model_sweep_s(r["setting"]["swap_fraction"])
            tau_s = f"{r['tau'] * model:.0f}" if r["tau"] is not None else f"> {r['sweeps'] * model:.0f}"
            lines.append(f"| {name} | {sweep_s * 1e3:.2f} | {model * 1e3:.2f} | {acc} | "
                         f"{_fmt_tau(r['tau'], r['sweeps'])} | {tau_s} |")
        if "prep_report" in tune:
            pr = tune["prep_report"]
            lines += ["", f"The common start was still ageing (E/N = {pr['energy_mean']:.4f} over its window, criterion "
                      f"met: {pr['criterion_met']}; the equilibrated chains below reach ~ -2.481 at T = 0.4): every "
                      "setting started from the same state, so the comparison holds, but the taus are those of an "
                      "ageing system (for the default settings the equilibrated chain at T = 0.4 gives the same tau_Q)."]
        lines += ["", "Cost model: seconds per displacement and per swap attempt from the idle-core throughput in "
                  "benchmarks/results/swap_mc.json (N = 1290, with and without swaps); the measured ms / sweep "
                  "column varies with the other users' load.", ""]
    chains = data.get("chains", {})
    if chains:
        gb = data.get("glassbench_T0.23", {})
        lines += ["## Chains (annealing cascades: seed s from a melt to 0.4, then each T from the T above)", "",
                  "| T | seed | criterion met | production sweeps | tau_Q [sweeps] | E/N | e_IS | swap acc. | wall [min] |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in chains.values():
            lines.append(f"| {c['temperature']} | {c['seed']} | {'yes' if c['criterion_met'] else 'NO'} | "
                         f"{c['sweeps_production']} | {_fmt_tau(c['tau_overlap'], c['window_sweeps'])} | "
                         f"{c['energy_mean']:.4f} | {c['e_is']:.4f} | {c['acceptance_swap']:.4f} | "
                         f"{c['wall_s'] / 60:.1f} |")
        lines += ["", "tau_Q is measured on the last half of the production run (the window); '> X' = Q(t) "
                  "still above 1/e at the window length X (censored). Reasons for NO:", ""]
        for name, c in chains.items():
            if not c["criterion_met"]:
                lines.append(f"- {name}: {'; '.join(c['reasons'])}")
        lines += ["", "### Inherent-structure energy per particle vs T", "",
                  "| T | e_IS chain 1 | e_IS chain 2 | difference | both met the criterion |", "|---|---|---|---|---|"]
        for t in CHAIN_TEMPERATURES:
            pair = [chains.get(chain_name(t, s)) for s in CHAIN_SEEDS]
            if None in pair:
                continue
            lines.append(f"| {t} | {pair[0]['e_is']:.4f} | {pair[1]['e_is']:.4f} | "
                         f"{pair[0]['e_is'] - pair[1]['e_is']:+.4f} | "
                         f"{'yes' if all(c['criterion_met'] for c in pair) else 'no'} |")
        sp = data.get("e_is_spread")
        if sp and len(sp["e_is"]) >= 2:
            e = np.array(sp["e_is"])
            lines += ["", f"Error bar of one structure's e_IS: {len(e)} structures {sp['spacing_sweeps']} sweeps (one "
                      f"tau_Q) apart along {sp['chain']} give e_IS = {e.mean():.4f} with standard deviation "
                      f"{e.std(ddof=1):.4f} at T = {sp['temperature']}: two equilibrated chains should agree within "
                      f"~{2 * math.sqrt(2) * e.std(ddof=1):.4f} (2 sigma of a difference)."]
        if gb:
            lines += ["", f"Reference: the GlassBench T = 0.23 equilibrium structure (made by the authors' swap MC) "
                      f"minimised by our minimiser: e_IS = {gb['e_is']:.4f} (E/N = {gb['e']:.4f})."]
        lines.append("")
    taus = data.get("tau_no_swaps", {})
    if taus:
        lines += ["## Decorrelation time with and without swaps (sweeps)", "",
                  "| T | with swaps (chain s1 window) | without swaps (fresh run from the same structure) | speed-up |",
                  "|---|---|---|---|"]
        for name, r in taus.items():
            c = chains[name]
            with_s = c["tau_overlap"]
            without = r["tau"]
            if with_s is not None and without is not None:
                speed = f"{without / with_s:.2g}"
            elif with_s is not None:
                speed = f"> {r['sweeps'] / with_s:.2g}"
            else:
                speed = "not measured (both censored)"
            lines.append(f"| {c['temperature']} | {_fmt_tau(with_s, c['window_sweeps'])} | "
                         f"{_fmt_tau(without, r['sweeps'])} (Q = {r['q_end']:.2f} at end) | {speed} |")
        lines.append("")
    ext = extrapolate_t015(data)
    if ext:
        lines += ["## Wall time to one equilibrated N = 1290 structure at T = 0.15", "",
                  f"- Measured: {'REACHED by ' + str(ext['met']) + ' chain(s)' if ext['met'] else 'not reached'}. "
                  f"The T = 0.15 chains ran up to {ext['measured_sweeps']} production sweeps "
                  f"(whole cascade from the melt through 0.4 ... 0.15: {ext['measured_min']:.1f} min of one loaded core "
                  "per chain); verdicts in the chain table.",
                  f"- EXTRAPOLATED (Arrhenius through the uncensored tau_Q at T >= 0.3: {ext['points']}; activation "
                  f"{ext['activation']:.2f} epsilon; a lower estimate, the growth is super-Arrhenius): tau_Q(0.15) ~ "
                  f"{ext['tau']:.2g} sweeps; the criterion (production >= 2 x 10 tau_Q) then needs "
                  f"{ext['sweeps']:.2g} sweeps = {ext['hours']:.1f} h of one idle core (cost model "
                  f"{ext['sweep_s'] * 1e3:.2f} ms / sweep). Target (30 min): not met.", ""]
    text = "\n".join(lines)
    write_text_atomic(RESULTS / "swap_equilibration.md", text)
    if chains:
        plot(data, RESULTS / "swap_equilibration.png")
    print(text)


def plot(data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chains = data["chains"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s, colour in zip(CHAIN_SEEDS, ("C0", "C1")):
        cs = [c for c in chains.values() if c["seed"] == s]
        t = np.array([c["temperature"] for c in cs])
        e = np.array([c["e_is"] for c in cs])
        met = np.array([c["criterion_met"] for c in cs], dtype=bool)
        sp = data.get("e_is_spread")
        sd = float(np.std(sp["e_is"], ddof=1)) if sp and len(sp["e_is"]) >= 2 else 0.0
        # one structure's e_IS scatters by sd (measured at T = 0.4, applied to every T)
        ax1.errorbar(t, e, yerr=sd, fmt="-", color=colour, lw=0.8, capsize=3)
        ax1.plot(t[met], e[met], "o", color=colour, label=f"chain {s}, criterion met")
        ax1.plot(t[~met], e[~met], "o", mfc="none", color=colour, label=f"chain {s}, NOT met")
        tq = np.array([c["tau_overlap"] if c["tau_overlap"] is not None else np.nan for c in cs], dtype=float)
        ax2.semilogy(1 / t, tq, "o-", color=colour, label=f"with swaps, chain {s}")
        cens = np.isnan(tq)
        if cens.any():
            lb = np.array([c["window_sweeps"] for c in cs], dtype=float)[cens]
            ax2.plot(1 / t[cens], lb, "^", mfc="none", color=colour, label=f"chain {s}: censored (lower bound)")
    gb = data.get("glassbench_T0.23")
    if gb:
        ax1.plot([0.23], [gb["e_is"]], "k*", ms=10, label="GlassBench T = 0.23 (authors' swap MC)")
    taus = data.get("tau_no_swaps", {})
    if taus:
        t = np.array([chains[k]["temperature"] for k in taus])
        v = np.array([r["tau"] if r["tau"] is not None else r["sweeps"] for r in taus.values()], dtype=float)
        measured = np.array([r["tau"] is not None for r in taus.values()], dtype=bool)
        ax2.plot(1 / t, v, "k--", lw=0.8)
        ax2.plot(1 / t[measured], v[measured], "ks", label="without swaps")
        ax2.plot(1 / t[~measured], v[~measured], "ks", mfc="none", label="without swaps: censored (lower bound)")
    ax1.set_xlabel("T [epsilon / k_B]")
    ax1.set_ylabel("inherent-structure energy e_IS [epsilon / particle]")
    ax1.set_title("error bars: spread of one structure's e_IS (T = 0.4)", fontsize=8)
    ax1.legend(fontsize=7)
    ax2.set_xlabel("1 / T [k_B / epsilon]")
    ax2.set_ylabel("tau_Q [sweeps]")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["tune", "chains", "tau", "spread", "report"])
    ap.add_argument("--minutes", type=float, default=50.0, help="wall-time budget of the stage")
    ap.add_argument("--temperature", type=float, default=0.4, choices=sorted(TUNE), help="tune stage only")
    args = ap.parse_args(argv)
    {"tune": stage_tune, "chains": stage_chains, "tau": stage_tau, "spread": stage_spread,
     "report": stage_report}[args.stage](args)


if __name__ == "__main__":
    main()
