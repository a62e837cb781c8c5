"""Which displacement acceptance target makes swap Monte Carlo decorrelate fastest per CPU second (issue 3)?

The sampler (``tglassmlp.physics.swap_mc``) adapts the half-width d of its displacement moves during burn-in
towards ``target_acceptance`` (``conf/swap/default.yaml``: 0.4) and then freezes it. Here, at T = 0.4 and 0.3
with the default swaps (pairs, swap_fraction), for each acceptance target:

1. one common start per T: the GlassBench T = 0.23 equilibrium structure (N = 1290) heated to T and run for
   ``prep_sweeps`` sweeps (d adapted to the default target first), cached in ``<out>/start_T<T>.npz``;
2. per (target, seed): ``SwapMonteCarlo.adapt`` for ``settings.adapt_sweeps_at_target`` sweeps from that
   start with the target replaced, d frozen, then ``measure_tau`` (benchmarks/swap_mc.py: the tau_Q
   measurement shared with the other swap benchmarks) over ``sweeps`` sweeps;
3. recorded: frozen d [sigma], displacement and swap acceptance, CPU seconds per sweep
   (``time.process_time`` around the measurement run, i.e. the kernel plus the snapshot copies and the Q(t)
   analysis, < 1 %), tau_Q in sweeps and in CPU seconds (tau_Q x CPU s / sweep of the same run), mean E/N.

Results go to ``<out>/swap_displacement.json`` after every run (atomically); a rerun skips the runs already
stored (the stored study settings must match, else it refuses). ``--report`` rewrites the .md/.png from it.

    nice -n 10 .venv/bin/python benchmarks/swap_displacement.py            # full study, ~45 min of one core
    nice -n 10 .venv/bin/python benchmarks/swap_displacement.py --quick    # smoke test, ~2 min, censored taus

Full: ``benchmarks/results/swap_displacement.{md,json,png}``; quick: ``outputs/swap_displacement_quick/``.
Times: one sweep = N = 1290 attempted moves; CPU seconds are of one core (niced, shared machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402
from swap_mc import measure_tau  # noqa: E402  (the one tau_Q measurement of the swap benchmarks)

from tglassmlp.atomic import save_npz_atomic, write_json_atomic, write_text_atomic  # noqa: E402
from tglassmlp.physics.swap_mc import SwapMonteCarlo, load_swap_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GLASSBENCH = ROOT.parent / "shared" / "data" / "glassbench" / "N1290T0.23_202_tc05.npz"
# equilibrium E/N of the annealing-cascade chains (swap_equilibration.py): a check that the starts are not
# still ageing (read from there, not repeated here)
EQUILIBRATION_JSON = RESULTS / "swap_equilibration.json"
# the sampler's current default target, the reference of every ratio below
REFERENCE_TARGET = 0.4

# Study settings. prep_sweeps: the start's run at T after heating (~4.5 tau_Q at 0.4, ~3 tau_Q at 0.3 with
# the default target); sweeps: the measurement run, >= ~3 tau_Q for the slowest target expected (a small d
# at 55 % acceptance: tau_Q up to ~1.5x that at 40 %, i.e. ~1e4 at 0.4 and ~3e4 at 0.3).
# Target 0.1 is beyond the brief's set {0.2, 0.3, 0.4, 0.55}: it says whether the optimum lies below 0.2.
FULL = dict(targets=[0.1, 0.2, 0.3, 0.4, 0.55], seeds=[1, 2, 3],
            temperatures={"0.4": dict(prep_sweeps=30000, sweeps=40000),
                          "0.3": dict(prep_sweeps=60000, sweeps=90000)})
QUICK = dict(targets=[0.1, 0.2, 0.3, 0.4, 0.55], seeds=[1],
             temperatures={"0.4": dict(prep_sweeps=1000, sweeps=2000),
                           "0.3": dict(prep_sweeps=1000, sweeps=2000)})


def run_key(temperature: str, target: float, seed: int) -> str:
    return f"T{temperature}/acc{target:g}/s{seed}"


def run_rng(temperature: str, target: float, seed: int) -> np.random.Generator:
    """Independent stream per (T, target, seed): a SeedSequence of the three, so no two runs share numbers."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), round(float(temperature) * 1000),
                                                         round(target * 1000)]))


# ================================================================================= common start per T
def common_start(temperature: str, prep_sweeps: int, out: Path, settings) -> dict:
    """The GlassBench T = 0.23 structure heated to T: d adapted (default target) for
    ``settings.adapt_sweeps_at_target`` sweeps, then ``prep_sweeps`` frozen-d sweeps. Cached in ``out``.

    Returns dict(positions (N, 2) [sigma], types (N,), box [sigma], energy_window E/N averaged over the last
    half of the prep run [epsilon], d of the prep [sigma]).
    """
    path = out / f"start_T{temperature}.npz"
    if path.is_file():
        z = np.load(path)
        if int(z["prep_sweeps"]) == prep_sweeps:
            return dict(positions=z["positions"], types=z["types"], box=float(z["box"]),
                        energy_window=float(z["energy_window"]), d=float(z["d"]), cpu_s=float(z["cpu_s"]))
        print(f"[start] {path} was made with {int(z['prep_sweeps'])} prep sweeps, not {prep_sweeps}: redoing it")
    from tglassmlp.data import read_glassbench

    gb = read_glassbench(GLASSBENCH)
    t0 = time.process_time()
    mc = SwapMonteCarlo(float(temperature), seed=10, settings=settings).reset(gb.positions, gb.types, gb.box)
    mc.adapt(settings.adapt_sweeps_at_target)
    mc.reset_counters()
    done = 0
    with tqdm(total=prep_sweeps, desc=f"start T={temperature}", unit="sweep", leave=False) as bar:
        while done < prep_sweeps:
            chunk = min(2000, prep_sweeps - done)
            mc.run(chunk)
            done += chunk
            bar.update(chunk)
    mc.check_energy()
    trace = mc.energy_trace
    start = dict(positions=mc.positions, types=mc.types, box=mc.box,
                 energy_window=float(trace[trace.size // 2:].mean()), d=mc.max_displacement,
                 cpu_s=time.process_time() - t0)
    save_npz_atomic(path, dict(prep_sweeps=np.int64(prep_sweeps), **{k: np.asarray(v) for k, v in start.items()}))
    return start


# ================================================================================= one measurement
def measure(start: dict, temperature: str, target: float, seed: int, sweeps: int, settings) -> dict:
    """Adapt d towards ``target`` from ``start``, freeze it, measure tau_Q; numbers of one run (see module doc)."""
    mc = SwapMonteCarlo(float(temperature), rng=run_rng(temperature, target, seed),
                        settings=replace(settings, target_acceptance=target))
    mc.reset(start["positions"], start["types"], start["box"])
    mc.adapt(settings.adapt_sweeps_at_target)  # d frozen from here on (measure_tau never adapts)
    t0, w0 = time.process_time(), time.perf_counter()
    r = measure_tau(mc, sweeps, swaps=True, a=settings.overlap_a)
    cpu = time.process_time() - t0
    mc.check_energy()
    sweep_cpu_s = cpu / sweeps
    return dict(temperature=float(temperature), target=target, seed=seed, sweeps=sweeps,
                max_displacement=mc.max_displacement, acceptance_displacement=r["acceptance_displacement"],
                acceptance_swap=r["acceptance_swap"], acceptance_swap_by_pair=mc.acceptance_swap_by_pair,
                tau_sweeps=r["tau"], tau_lower_bound_sweeps=r["lower_bound"], q_end=r["q_end"],
                sweep_cpu_s=sweep_cpu_s, sweep_wall_s=(time.perf_counter() - w0) / sweeps,
                tau_cpu_s=None if r["tau"] is None else r["tau"] * sweep_cpu_s,
                energy_mean=float(mc.energy_trace.mean()), load_average=list(os.getloadavg()))


# ================================================================================= summary statistics
def summarise(data: dict) -> dict:
    """Per (T, target): mean, sd, standard error over seeds of tau_Q (sweeps, CPU s) and of the run numbers;
    ratio of tau_Q [CPU s] to that at REFERENCE_TARGET with its standard error (relative errors in quadrature),
    and whether every seed of the target lies below every seed of the reference (no overlap of the ranges)."""
    out = {}
    for temperature in data["study"]["temperatures"]:
        rows = {}
        for target in data["study"]["targets"]:
            runs = [r for r in data["runs"].values() if r["temperature"] == float(temperature)
                    and r["target"] == target]
            if not runs:
                continue
            row = dict(n=len(runs), censored=sum(r["tau_sweeps"] is None for r in runs))
            for name in ("max_displacement", "acceptance_displacement", "acceptance_swap", "sweep_cpu_s",
                         "energy_mean"):
                row[name] = float(np.mean([r[name] for r in runs]))
            for name in ("tau_sweeps", "tau_cpu_s"):
                v = np.array([r[name] for r in runs if r[name] is not None], dtype=float)
                row[name] = v.tolist()
                row[name + "_mean"] = float(v.mean()) if v.size else None
                row[name + "_sd"] = float(v.std(ddof=1)) if v.size > 1 else None
                row[name + "_se"] = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None
            # short-time mobility proxy: mean squared step per attempted displacement ~ acceptance x d^2
            row["mobility_proxy"] = row["acceptance_displacement"] * row["max_displacement"] ** 2
            rows[target] = row
        ref = rows.get(REFERENCE_TARGET)
        for row in rows.values():
            if ref is not None:
                row["mobility_ratio_inverse"] = ref["mobility_proxy"] / row["mobility_proxy"]
            ok = (ref is not None and not row["censored"] and not ref["censored"] and row["n"] > 1 and ref["n"] > 1)
            if ok:
                ratio = row["tau_cpu_s_mean"] / ref["tau_cpu_s_mean"]
                rel = math.hypot(row["tau_cpu_s_se"] / row["tau_cpu_s_mean"],
                                 ref["tau_cpu_s_se"] / ref["tau_cpu_s_mean"])
                row["ratio_cpu"] = ratio
                row["ratio_cpu_se"] = ratio * rel
                row["ratio_sweeps"] = row["tau_sweeps_mean"] / ref["tau_sweeps_mean"]
                row["all_below_reference"] = max(row["tau_cpu_s"]) < min(ref["tau_cpu_s"])
        out[temperature] = rows
    return out


# ================================================================================= report
def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def reference_energies() -> dict:
    if not EQUILIBRATION_JSON.is_file():
        return {}
    chains = json.loads(EQUILIBRATION_JSON.read_text()).get("chains", {})
    out = {}
    for c in chains.values():
        out.setdefault(f"{c['temperature']:g}", []).append(c["energy_mean"])
    return {t: float(np.mean(v)) for t, v in out.items()}


def write_report(data: dict, out: Path, stem: str):
    summary = summarise(data)
    data["summary"] = summary
    study = data["study"]
    ref_e = reference_energies()
    lines = [f"# Displacement acceptance target of swap Monte Carlo (N = 1290): tau_Q per CPU second", "",
             f"- updated {data.get('updated')}; command `{data.get('command')}`; machine: "
             f"{data['machine'].get('cpu_model')}, {data['machine'].get('cpu_count')} cores shared with other "
             f"developers, Python {data['machine'].get('python')}; load average at the end "
             f"{', '.join(f'{x:.2f}' for x in data.get('load_average', []))}",
             f"- total CPU time of the study: {data.get('cpu_s_total', 0) / 60:.1f} min (one core, niced)",
             f"- swaps: default pairs {study['swap_pairs']}, swap_fraction {study['swap_fraction']}; overlap "
             f"a = {study['overlap_a']} sigma; tau_Q = first time the self-overlap Q(t), averaged over time origins, "
             "falls below 1/e (`measure_tau` of benchmarks/swap_mc.py)",
             f"- protocol per run: common start per T (GlassBench T = 0.23 structure heated to T, "
             f"{study['adapt_sweeps']} sweeps adapting d to 0.4, then the prep sweeps below); from it, "
             f"{study['adapt_sweeps']} sweeps adapting d to the target (`SwapMonteCarlo.adapt`), d frozen, then "
             "the measurement run; seeds: independent random streams; CPU time = `time.process_time` of the "
             "measurement run", ""]
    lines += ["## Common starts", "", "| T | prep sweeps | measurement sweeps per run | E/N over the last half of "
              "the prep [epsilon] | E/N of the equilibrated chains (swap_equilibration) |", "|---|---|---|---|---|"]
    for t, spec in study["temperatures"].items():
        s = data.get("starts", {}).get(t)
        if s:
            lines.append(f"| {t} | {spec['prep_sweeps']} | {spec['sweeps']} | {s['energy_window']:.4f} | "
                         f"{_fmt(ref_e.get(t), '.4f')} |")
    lines += ["", "## Per run", "", "| T | target | seed | d [sigma] | disp. acc. | swap acc. | CPU ms / sweep | "
              "tau_Q [sweeps] | tau_Q [CPU s] | E/N |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(data["runs"].values(), key=lambda r: (-r["temperature"], r["target"], r["seed"])):
        tau = (_fmt(r["tau_sweeps"], ".4g") if r["tau_sweeps"] is not None
               else f"> {r['tau_lower_bound_sweeps']} (Q = {r['q_end']:.2f})")
        lines.append(f"| {r['temperature']:g} | {r['target']:g} | {r['seed']} | {r['max_displacement']:.4f} | "
                     f"{r['acceptance_displacement']:.3f} | {r['acceptance_swap']:.4f} | "
                     f"{r['sweep_cpu_s'] * 1e3:.3f} | {tau} | {_fmt(r['tau_cpu_s'], '.1f')} | "
                     f"{r['energy_mean']:.4f} |")
    lines += ["", "## Per target (mean over seeds; +- = standard error of the mean; range = min-max over seeds)", "",
              "| T | target | n | d [sigma] | disp. acc. | CPU ms / sweep | tau_Q [sweeps] | tau_Q [CPU s] (range) | "
              "ratio to target 0.4 (CPU) | 1 / mobility ratio (acc d^2 at 0.4 / here) | every seed below every "
              "0.4 seed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t, rows in summary.items():
        for target, row in rows.items():
            cens = f" ({row['censored']} censored)" if row["censored"] else ""
            rng = f" ({min(row['tau_cpu_s']):.1f}-{max(row['tau_cpu_s']):.1f})" if row["tau_cpu_s"] else ""
            ratio = (f"{row['ratio_cpu']:.2f} +- {row['ratio_cpu_se']:.2f}" if "ratio_cpu" in row else "-")
            lines.append(
                f"| {t} | {target:g} | {row['n']}{cens} | {row['max_displacement']:.4f} | "
                f"{row['acceptance_displacement']:.3f} | {row['sweep_cpu_s'] * 1e3:.3f} | "
                f"{_fmt(row['tau_sweeps_mean'], '.4g')} +- {_fmt(row['tau_sweeps_se'], '.2g')} | "
                f"{_fmt(row['tau_cpu_s_mean'], '.1f')} +- {_fmt(row['tau_cpu_s_se'], '.1f')}{rng} | {ratio} | "
                f"{_fmt(row.get('mobility_ratio_inverse'), '.2f')} | "
                f"{'yes' if row.get('all_below_reference') else 'no'} |")
    lines += ["", "Mobility proxy: the mean squared step per attempted displacement is acceptance x 2 d^2 / 3; if "
              "tau_Q were set by the short-time (Brownian-like) mobility alone, the tau ratio would equal the "
              "'1 / mobility ratio' column.", ""]
    cpu = [r["sweep_cpu_s"] * 1e3 for r in data["runs"].values()]
    if cpu:
        lines += [f"CPU time per sweep over all runs: {min(cpu):.3f}-{max(cpu):.3f} ms (it grows slightly with d), "
                  "so tau_Q in CPU seconds follows tau_Q in sweeps.", ""]
    lines += verdict(summary)
    write_text_atomic(out / f"{stem}.md", "\n".join(lines) + "\n")
    plot(data, summary, out / f"{stem}.png")


def verdict(summary: dict) -> list:
    """Which targets beat 0.4 in tau_Q per CPU second by more than 2 standard errors at every T."""
    temps = list(summary)
    targets = sorted({tg for rows in summary.values() for tg in rows if tg != REFERENCE_TARGET})
    lines = ["## Verdict (computed from the table above)", ""]
    better, compared = [], 0
    for tg in targets:
        rows = [summary[t].get(tg) for t in temps]
        if any(r is None or "ratio_cpu" not in r for r in rows):
            lines.append(f"- target {tg:g}: not comparable at every T (missing or censored runs)")
            continue
        compared += 1
        sig = [r["ratio_cpu"] + 2 * r["ratio_cpu_se"] < 1 for r in rows]
        slower = [r["ratio_cpu"] - 2 * r["ratio_cpu_se"] > 1 for r in rows]
        desc = ", ".join(f"T = {t}: {r['ratio_cpu']:.2f} +- {r['ratio_cpu_se']:.2f}" for t, r in zip(temps, rows))
        ok = all(sig) and all(r["all_below_reference"] for r in rows)
        if ok:
            word = "SHORTER beyond 2 s.e. and no seed overlap at every T"
        elif all(slower):
            word = "LONGER beyond 2 s.e. at every T"
        else:
            word = ("no difference beyond 2 s.e. at "
                    + ", ".join(f"T = {t}" for t, a, b in zip(temps, sig, slower) if not (a or b))
                    + ("; longer at " + ", ".join(f"T = {t}" for t, b in zip(temps, slower) if b) if any(slower)
                       else "") + ("; shorter at " + ", ".join(f"T = {t}" for t, a in zip(temps, sig) if a)
                                   if any(sig) else ""))
        lines.append(f"- target {tg:g}: tau_Q[CPU] / tau_Q[CPU at 0.4] = {desc}: {word}")
        if ok:
            better.append(tg)
    lines.append("")
    if not compared:
        lines.append("Nothing to compare yet (each target needs >= 2 uncensored runs at every T).")
    elif better:
        lines.append(f"Targets consistently faster than 0.4 beyond the noise: {', '.join(f'{b:g}' for b in better)}.")
    else:
        lines.append("No target is consistently faster than 0.4 beyond the noise.")
    return lines + [""]


def plot(data: dict, summary: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    cpu_ax = axes[2].twinx()
    for k, t in enumerate(summary):
        colour = f"C{k}"
        runs = [r for r in data["runs"].values() if r["temperature"] == float(t)]
        for ax, name in ((axes[0], "tau_sweeps"), (axes[1], "tau_cpu_s")):
            x = [r["target"] for r in runs if r[name] is not None]
            y = [r[name] for r in runs if r[name] is not None]
            ax.plot(x, y, "o", mfc="none", color=colour, label=f"T = {t}, single seeds")
            rows = summary[t]
            xm = [tg for tg in rows if rows[tg][name + "_mean"] is not None]
            ym = [rows[tg][name + "_mean"] for tg in xm]
            em = [rows[tg][name + "_se"] or 0.0 for tg in xm]
            ax.errorbar(xm, ym, yerr=em, fmt="-s", color=colour, capsize=3, label=f"T = {t}, mean +- s.e.")
            cens = [r for r in runs if r["tau_sweeps"] is None]
            if cens:
                scale = [1.0 if name == "tau_sweeps" else r["sweep_cpu_s"] for r in cens]
                ax.plot([r["target"] for r in cens], [r["tau_lower_bound_sweeps"] * c for r, c in zip(cens, scale)],
                        "^", color=colour, mfc="none", label=f"T = {t}, censored (lower bound)")
        rows = summary[t]
        xs = list(rows)
        axes[2].plot(xs, [rows[tg]["max_displacement"] for tg in xs], "-o", color=colour,
                     label=f"T = {t}: frozen d [sigma]")
        cpu_ax.plot(xs, [rows[tg]["sweep_cpu_s"] * 1e3 for tg in xs], "--x", color=colour,
                    label=f"T = {t}: CPU time per sweep (right axis)")
    for ax in axes:
        ax.axvline(REFERENCE_TARGET, color="0.7", lw=0.8, ls=":")
        ax.set_xlabel("displacement acceptance target")
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].set_ylabel("tau_Q [sweeps of N = 1290 moves]")
    axes[1].set_ylabel("tau_Q [CPU s, one core]")
    axes[2].set_ylabel("frozen displacement half-width d [sigma]")
    cpu_ax.set_ylabel("CPU time per sweep [ms] (dashed)")
    cpu_ax.legend(fontsize=7, loc="upper center")
    fig.suptitle("swap MC, default swaps: decorrelation time vs displacement acceptance target "
                 "(dotted: current default 0.4)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ================================================================================= driver
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: short runs, one seed (taus censored)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default: benchmarks/results, or outputs/swap_displacement_quick with "
                         "--quick)")
    ap.add_argument("--report", action="store_true", help="only rewrite the .md and .png from the .json")
    args = ap.parse_args(argv)
    spec = QUICK if args.quick else FULL
    out = args.out or (ROOT / "outputs" / "swap_displacement_quick" if args.quick else RESULTS)
    cache = out if args.quick else ROOT / "outputs" / "swap_displacement"
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    stem = "swap_displacement"
    json_path = out / f"{stem}.json"
    settings = load_swap_settings()
    study = dict(spec, swap_pairs=[list(p) for p in settings.swap_pairs], swap_fraction=settings.swap_fraction,
                 overlap_a=settings.overlap_a, adapt_sweeps=settings.adapt_sweeps_at_target,
                 adapt_every=settings.adapt_every)
    data = json.loads(json_path.read_text()) if json_path.is_file() else {}
    if args.report:
        if not data:
            raise SystemExit(f"--report: no results at {json_path}")
        write_report(data, out, stem)
        write_json_atomic(json_path, data, default=float)  # with the recomputed summary
        print((out / f"{stem}.md").read_text())
        return
    if data and json.loads(json.dumps(data.get("study"))) != json.loads(json.dumps(study)):
        raise SystemExit(f"{json_path} holds a study with other settings ({data.get('study')}); move it away or "
                         "pass another --out")
    data.setdefault("study", study)
    data.setdefault("runs", {})
    data.setdefault("starts", {})
    data["command"] = "nice -n 10 .venv/bin/python benchmarks/swap_displacement.py" + (" --quick" if args.quick else "")
    cpu_before = data.get("cpu_s_total", 0.0)
    t_cpu = time.process_time()

    def save():
        data["updated"] = datetime.datetime.now().isoformat(timespec="seconds")
        data["machine"] = machine_info(numpy=np.__version__)
        data["load_average"] = list(os.getloadavg())
        data["cpu_s_total"] = cpu_before + time.process_time() - t_cpu
        write_json_atomic(json_path, data, default=float)

    starts = {}
    for t, tspec in spec["temperatures"].items():
        starts[t] = common_start(t, tspec["prep_sweeps"], cache, settings)
        data["starts"][t] = dict(energy_window=starts[t]["energy_window"], d=starts[t]["d"],
                                 cpu_s=starts[t]["cpu_s"], prep_sweeps=tspec["prep_sweeps"])
    save()
    # seeds outermost: a study cut short still holds complete seeds for every (T, target)
    todo = [(t, tg, s) for s in spec["seeds"] for t in spec["temperatures"] for tg in spec["targets"]
            if run_key(t, tg, s) not in data["runs"]]
    for t, tg, s in tqdm(todo, desc="runs", unit="run"):
        r = measure(starts[t], t, tg, s, spec["temperatures"][t]["sweeps"], settings)
        data["runs"][run_key(t, tg, s)] = r
        save()
        tqdm.write(f"[run] T={t} target={tg:g} seed={s}: d={r['max_displacement']:.4f} acc="
                   f"{r['acceptance_displacement']:.3f}/{r['acceptance_swap']:.4f} "
                   f"{r['sweep_cpu_s'] * 1e3:.3f} ms/sweep tau_Q={r['tau_sweeps']} sweeps = {r['tau_cpu_s']} CPU s "
                   f"(Q_end {r['q_end']:.2f}) E/N={r['energy_mean']:.4f}")
    write_report(data, out, stem)
    save()
    print((out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
