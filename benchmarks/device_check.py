"""Every GPU figure in one command (< 8 minutes), prepared for the day a GPU is lent:

    python benchmarks/device_check.py                 # on a GPU machine: CUDA
    python benchmarks/device_check.py --platform OpenCL --quick   # a dry run of the GPU parts on any OpenCL device

1. CUDA against Reference: energy and forces of the GlassBench N = 1290 structure against the numpy reference,
   and 2 isoconfigurational runs to t = 1 against the Reference platform (same velocity draws).
2. MD throughput (particle-steps/s) of one Context holding 1, 20, 100 stacked replicas of one structure, and
   K = 1, 5, 20 structures x 20 replicas (the ``md.structures_per_context`` layout of ``launcher=slurm_gpu``),
   plus the cost of one checkpoint-stride Context rebuild (``md.checkpoint_stride``).
3. The wall time of the paper-scale MD preset (conf/simulation_dataset/paper.yaml, simulation_experiment=paper) on one GPU
   at the best measured rate.
4. The swap Monte Carlo GPU check, ``benchmarks/device_swap.py`` (its ``run(results_dir, budget_s)``), when
   that file exists, with the share of the budget the MD parts left.

Writes benchmarks/results/device_check_<device>.{md,json} (machine, command, commit, device name). Without a
GPU it says so in one line, skips the GPU parts and still runs part 4 (which handles the no-GPU case itself).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import openmm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from md_throughput import (  # noqa: E402
    STRUCTURE,
    TEMPERATURE,
    _context,
    distinct_structures,
    git_commit,
    load_structure,
    machine_info,
    time_contexts,
)
from omegaconf import OmegaConf  # noqa: E402

from tglassmlp.paths import config_dir  # noqa: E402
from tglassmlp.physics import energy_and_forces  # noqa: E402
from tglassmlp.physics.md import isoconfigurational_runs  # noqa: E402
from tglassmlp.physics.openmm_system import (  # noqa: E402
    available_platforms,
    build_system,
    make_context,
    md_config,
    opencl_device,
    opencl_runs_on_cpu,
    platform_problem,
    stacked_positions,
    unstack,
)

BUDGET_S = 450.0  # the whole command, under 8 minutes with start-up
SWAP_MARGIN_S = 20.0  # kept back from the swap check's share for writing the report
REPLICAS = (1, 20, 100)
STRUCTURES = (1, 5, 20)
REPLICAS_WITH_STRUCTURES = 20
# CUDA/OpenCL (mixed precision) vs numpy and vs Reference on this N = 1290 structure (box 33 sigma): float32
# coordinates carry ~2e-6 sigma of rounding; times the stiffest pair's curvature (~3e3 epsilon/sigma^2) that is
# ~6e-3 on the largest force (50 epsilon/sigma). Measured: OpenCL (PoCL) 1.25e-4 of max |F|, the CPU platform
# 4.6e-5; energy 2e-7 relative; 2 runs 5e-6 sigma at t = 0.1 and 3e-5 at t = 1 (chaos amplifies the rounding).
# A wrong force, a layer feeling another or a wrong velocity shifts positions by >= 1e-2 sigma at t = 0.1.
FORCE_RTOL = 3e-4
ENERGY_RTOL = 1e-5
RUN_ATOL = 1e-4
RUN_TIMES = [0.1, 1.0]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "device"


def device_name(platform: str) -> str:
    """The GPU's (or OpenCL device's) name as OpenMM reports it."""
    if platform == "OpenCL":
        dev = opencl_device("mixed")
        return f"{dev[1]} ({dev[0]})" if dev else "OpenCL"
    system = openmm.System()
    for _ in range(2):
        system.addParticle(1.0)
    plat = openmm.Platform.getPlatformByName(platform)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), plat, {"Precision": "mixed"})
    try:
        return plat.getPropertyValue(ctx, "DeviceName")
    finally:
        del ctx


def correctness(platform, positions, types, box, log) -> dict:
    """Energy/forces against numpy; 2 runs to t = 1 against Reference."""
    e_ref, f_ref = energy_and_forces(positions, types, box)
    ctx = make_context(build_system(types, box), platform, precision="mixed")
    ctx.setPositions(stacked_positions(positions))
    st = ctx.getState(getEnergy=True, getForces=True)
    e = st.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    f = unstack(st.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer), 1)
    del ctx
    e_err = abs(e - e_ref) / abs(e_ref)
    f_err = float(np.abs(f[0] - f_ref).max() / np.abs(f_ref).max())
    kw = dict(times=RUN_TIMES, n_runs=2, seed=5, progress=False)
    gpu = isoconfigurational_runs(positions, types, box, TEMPERATURE, platform=platform, **kw)
    ref = isoconfigurational_runs(positions, types, box, TEMPERATURE, platform="Reference", **kw)
    run_err = [float(np.abs(gpu[:, k] - ref[:, k]).max()) for k in range(len(RUN_TIMES))]
    ok = e_err <= ENERGY_RTOL and f_err <= FORCE_RTOL and max(run_err) <= RUN_ATOL
    log(f"  correctness: energy {e_err:.2g} rel, forces {f_err:.2g} of max|F|, runs vs Reference "
        f"{', '.join(f'{x:.2g} at t = {t:g}' for x, t in zip(run_err, RUN_TIMES))} -> {'PASS' if ok else 'FAIL'}")
    return {"energy_rel_error": e_err, "force_error_over_max": f_err, "times": RUN_TIMES,
            "run_max_abs_diff_vs_reference": run_err, "bounds": {"energy_rtol": ENERGY_RTOL,
                                                                  "force_rtol": FORCE_RTOL, "run_atol": RUN_ATOL},
            "pass": bool(ok)}


def throughput(platform, positions, types, box, target_s, log) -> list[dict]:
    n = len(positions)
    layout = md_config().layout
    rows = []
    configs = [(1, r) for r in REPLICAS] + [(k, REPLICAS_WITH_STRUCTURES) for k in STRUCTURES]
    structs = distinct_structures(positions, types, box, max(STRUCTURES))
    for k, r in dict.fromkeys(configs):
        pos = np.stack([p for p, _ in structs[:k]])
        typ = np.stack([t for _, t in structs[:k]])
        t0 = time.perf_counter()
        ctx = _context(pos, typ, box, layout=layout, replicas=r, platform=platform, threads=None)
        setup = time.perf_counter() - t0
        rate, steps = time_contexts([ctx], k * r * n, target_s, 2)
        row = {"structures": k, "replicas": r, "layers": k * r, "particles": k * r * n,
               "particle_steps_per_s": rate, "steps_timed": steps, "context_setup_s": setup}
        if k == 5:  # the slurm_gpu layout: what one checkpoint-stride rebuild costs there
            t0 = time.perf_counter()
            ctx.reinitialize(preserveState=True)
            ctx.getIntegrator().step(1)
            row["rebuild_s"] = time.perf_counter() - t0
            row["rebuild_in_steps"] = row["rebuild_s"] * rate / (k * r * n)
        rows.append(row)
        log(f"  {k:>2} structure(s) x {r:>3} replica(s) = {k * r * n:>7} particles: "
            f"{rate / 1e6:9.2f} M particle-steps/s" + (f" (rebuild {row['rebuild_s']:.2f} s = "
                                                       f"{row['rebuild_in_steps']:.0f} steps)" if "rebuild_s" in row else ""))
        del ctx
    return rows


def paper_projection(rate: float, rebuild_steps: float | None) -> dict:
    """Wall time of conf/simulation_dataset/paper.yaml's MD on one device at ``rate`` particle-steps/s."""
    ds = OmegaConf.load(Path(config_dir()) / "simulation_dataset" / "paper.yaml")
    md = md_config()
    stride = int(md.checkpoint_stride)
    overhead = (rebuild_steps or 0.0) / stride
    rows, total = [], 0.0
    for sp in ds.state_points:
        if sp.t_max is None:
            continue
        steps = sp.t_max / md.dt
        ps = steps * ds.isoconfigurational.n_runs * ds.n_structures * ds.n_particles
        hours = ps / rate * (1 + overhead) / 3600
        total += hours
        rows.append({"temperature": float(sp.temperature), "t_max": float(sp.t_max), "particle_steps": ps,
                     "gpu_hours": hours})
    return {"rate": rate, "stride_overhead": overhead, "rows": rows, "total_gpu_hours": total,
            "n_structures": int(ds.n_structures), "n_runs": int(ds.isoconfigurational.n_runs)}


def swap_check(results_dir: Path, budget_s: float, log) -> dict:
    path = HERE / "device_swap.py"
    if not path.is_file():
        log("swap MC GPU check: benchmarks/device_swap.py not found, skipped")
        return {"status": "skipped: benchmarks/device_swap.py not found"}
    spec = importlib.util.spec_from_file_location("device_swap", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log(f"swap MC GPU check: benchmarks/device_swap.py with {budget_s:.0f} s")
    try:
        return {"status": "ran", "budget_s": budget_s, "result": module.run(results_dir, budget_s)}
    except Exception as exc:  # noqa: BLE001 - the MD figures above are still written
        log(f"swap MC GPU check failed: {type(exc).__name__}: {exc}")
        return {"status": f"failed: {type(exc).__name__}: {exc}"}


def write_report(out_dir: Path, payload: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"device_check_{slug(payload['device'] or 'no-gpu')}"
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    m = payload["machine"]
    lines = [f"# Device check: {payload['device'] or 'no GPU'}", "",
             f"- date: {payload['date']}", f"- command: `{payload['command']}`",
             f"- machine: {m['uname']}; CPU {m['cpu_model']}; {m['usable_cores']} usable cores; OpenMM {m['openmm']}",
             f"- git commit: {payload['git_commit']}", f"- platform: {payload['platform'] or '-'}; "
             f"wall time of the check: {payload['wall_s']:.0f} s", ""]
    if payload.get("note"):
        lines += [f"**{payload['note']}**", ""]
    if payload.get("correctness"):
        c = payload["correctness"]
        lines += ["## Against the references (GlassBench N = 1290, T = 0.23)", "",
                  f"- energy {c['energy_rel_error']:.2g} relative, forces {c['force_error_over_max']:.2g} of max |F| "
                  f"(bounds {ENERGY_RTOL:g}, {FORCE_RTOL:g}) vs numpy",
                  "- 2 runs vs Reference: " + ", ".join(f"{x:.2g} sigma at t = {t:g}" for x, t in
                                                      zip(c["run_max_abs_diff_vs_reference"], c["times"]))
                  + f" (bound {RUN_ATOL:g}) -> **{'PASS' if c['pass'] else 'FAIL'}**", ""]
    if payload.get("throughput"):
        lines += ["## MD throughput, one Context (mixed precision)", "",
                  "| structures | replicas each | layers | particles | M particle-steps/s | Context set-up [s] |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['structures']} | {r['replicas']} | {r['layers']} | {r['particles']} | "
                  f"{r['particle_steps_per_s'] / 1e6:.2f} | {r['context_setup_s']:.1f} |" for r in payload["throughput"]]
        rb = [r for r in payload["throughput"] if "rebuild_s" in r]
        if rb:
            lines += ["", f"- checkpoint-stride rebuild (Context.reinitialize) at 5 x 20 layers: {rb[0]['rebuild_s']:.2f} s "
                      f"= {rb[0]['rebuild_in_steps']:.0f} steps, i.e. {100 * rb[0]['rebuild_in_steps'] / md_config().checkpoint_stride:.2f} % "
                      f"at md.checkpoint_stride = {md_config().checkpoint_stride}"]
    if payload.get("projection"):
        p = payload["projection"]
        lines += ["", f"## Paper-scale MD preset on one device ({p['n_structures']} structures x {p['n_runs']} runs "
                  f"per T, at {p['rate'] / 1e6:.2f} M particle-steps/s, stride overhead {100 * p['stride_overhead']:.2f} %)", "",
                  "| T | t_max | particle-steps | device-hours |", "|---|---|---|---|"]
        lines += [f"| {r['temperature']:g} | {r['t_max']:.3g} | {r['particle_steps']:.3g} | {r['gpu_hours']:,.0f} |"
                  for r in p["rows"]]
        lines += [f"| **all** | | | **{p['total_gpu_hours']:,.0f}** ({p['total_gpu_hours'] / 24:,.0f} days) |"]
    lines += ["", "## Swap Monte Carlo GPU check (benchmarks/device_swap.py)", "", f"- {payload['swap']['status']}"]
    if payload["swap"].get("result") is not None:
        lines += ["", "```json", json.dumps(payload["swap"]["result"], indent=1, default=str)[:4000], "```"]
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", default="CUDA", choices=["CUDA", "OpenCL"],
                        help="the GPU platform (OpenCL: also a dry run on a CPU OpenCL device such as PoCL)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole check's time budget [s]")
    parser.add_argument("--quick", action="store_true", help="1 s per throughput figure (a dry run)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    problem = ("plugin not loaded" if args.platform not in available_platforms()
               else platform_problem(args.platform, "mixed"))
    payload = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join([Path(sys.executable).name, *map(shlex.quote, sys.argv)]),
               "machine": machine_info(), "git_commit": git_commit(), "platform": None, "device": None}
    if problem is not None:
        log(f"device_check: no GPU here (OpenMM {args.platform}: {problem}); GPU parts skipped")
    else:
        payload["platform"] = args.platform
        payload["device"] = device_name(args.platform)
        if args.platform == "OpenCL" and opencl_runs_on_cpu(*opencl_device("mixed")):
            payload["note"] = (f"OpenCL device {payload['device']} is the CPU: these are CPU figures of the GPU "
                               "code path, not GPU figures")
        log(f"device_check on {args.platform}: {payload['device']}" + (f" ({payload['note']})" if payload.get("note") else ""))
        positions, types, box = load_structure()
        payload["structure"] = STRUCTURE.name
        payload["correctness"] = correctness(args.platform, positions, types, box, log)
        target = 1.0 if args.quick else 6.0
        payload["throughput"] = throughput(args.platform, positions, types, box, target, log)
        best = max(payload["throughput"], key=lambda r: r["particle_steps_per_s"])
        rebuild = next((r["rebuild_in_steps"] for r in payload["throughput"] if "rebuild_in_steps" in r), None)
        payload["projection"] = proj = paper_projection(best["particle_steps_per_s"], rebuild)
        log(f"  paper-scale MD preset on one device: {proj['total_gpu_hours']:,.0f} h "
            f"({proj['total_gpu_hours'] / 24:,.0f} days) at {best['particle_steps_per_s'] / 1e6:.2f} M particle-steps/s "
            f"({best['structures']} x {best['replicas']} layers)")
    payload["wall_s"] = time.perf_counter() - t_start
    write_report(args.out_dir, {**payload, "swap": {"status": "pending"}})  # the MD figures are safe now
    share = max(0.0, args.budget_s - (time.perf_counter() - t_start) - SWAP_MARGIN_S)
    payload["swap"] = swap_check(args.out_dir, share, log)
    payload["wall_s"] = time.perf_counter() - t_start
    path = write_report(args.out_dir, payload)
    log(f"wrote {path} and .json ({payload['wall_s']:.0f} s)")
    return 0 if not payload.get("correctness") or payload["correctness"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
