"""Structural-descriptor benchmark: wall time and peak memory versus N (target: N = 82560 under 60 s, 2 cores).

Writes benchmarks/results/descriptors.md and .json. Run alone (the machine's cores are shared):

    .venv/bin/python benchmarks/descriptors.py                 # N = 1290, 5160, 20640, 82560 (~1-2 min)
    .venv/bin/python benchmarks/descriptors.py --tiles 1 8     # only N = 1290 and 82560

Structures: the GlassBench T = 0.23 inherent structure (N = 1290, box 32.8962) tiled k x k (N = 1290 k^2, box
32.8962 k, the paper's density), with Gaussian jitter of 0.005 sigma per coordinate so that the copies are not
exactly identical (k = 8 gives the paper's N = 82560 in a 263.17 box). Each size runs in a fresh subprocess so
that its peak RSS is its own. Timed stages: per-particle energies (numpy/cKDTree), the radical (power)
perimeters of the default settings (regular triangulation on scipy's Qhull) and, for comparison in the same
process, freud's plain Voronoi perimeters, the coarse-graining kernel (numba, parallel), and the full
``structural_descriptors`` call with the default settings (energies + radical perimeters + kernel).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
STRUCTURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glassbench" / "N1290T0.23_202_tc05.npz"
# jitter [sigma] added to the tiled copies: far below the interparticle spacing (~1), so still ~an inherent
# structure, but no two copies are bit-identical
JITTER = 0.005
TARGET_N = 82560
TARGET_S = 60.0


def machine() -> dict:
    import numba

    return dict(uname=" ".join(platform.uname()), cores=os.cpu_count(), numba_threads=numba.get_num_threads(),
                load_average=os.getloadavg(), python=sys.version.split()[0], numpy=np.__version__,
                numba=numba.__version__)


def tiled_structure(path: Path, tiles: int, seed: int = 0):
    data = np.load(path)
    box = float(data["box"])
    positions = np.mod(data["initial_positions_inherent"], box)
    types = data["types"].astype(np.int64) - 1  # GlassBench types 1..3 -> 0..2
    shifts = np.array([(a, b) for a in range(tiles) for b in range(tiles)], dtype=float) * box
    tiled = (positions[None] + shifts[:, None]).reshape(-1, 2)
    tiled += np.random.default_rng(seed).normal(0.0, JITTER, tiled.shape)
    return tiled, np.tile(types, tiles * tiles), box * tiles


def pyvoro2_perimeters_timed(positions, types, box, settings, reference):
    """(seconds, max relative difference to ``reference``) of the same radical perimeters from pyvoro2 (Voro++
    power mode, the library candidate), or (None, None) when pyvoro2 is not installed. Runs after the max RSS
    reading of the Voronoi stage so that its memory is not charged to the project's code."""
    try:
        import pyvoro2.planar as pv
    except ImportError:
        return None, None
    radii = np.asarray(settings.perimeter_radii)[types]
    t0 = time.perf_counter()
    cells = pv.compute(np.mod(positions, box), domain=pv.RectangularCell(bounds=((0, box), (0, box)),
                                                                         periodic=(True, True)),
                       mode="power", radii=radii, output="cells", return_adjacency=False)
    got = np.zeros(len(positions))
    for cell in cells:
        v = np.asarray(cell["vertices"])
        edges = np.asarray([e["vertices"] for e in cell["edges"]])
        got[cell["id"]] = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1).sum()
    seconds = time.perf_counter() - t0
    return seconds, float(np.max(np.abs(got / reference - 1.0)))


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def child(tiles: int, structure: Path) -> dict:
    """One size in this process: stage timings, tracemalloc peak and max RSS of the full call."""
    from tglassmlp.observables import cell_perimeters, load_descriptor_settings, structural_descriptors, voronoi_perimeters
    from tglassmlp.physics import particle_energies

    settings = load_descriptor_settings()
    if not settings.perimeter_weighted:
        raise SystemExit("benchmarks/descriptors.py times the radical perimeters of the default settings; "
                         "conf/descriptors/default.yaml has perimeter.weighted = false")

    # compile (or load from numba's cache) on a tiny system so that it is not charged to any size
    t0 = time.perf_counter()
    small, small_types, small_box = tiled_structure(structure, 1)
    structural_descriptors(small[:200], small_types[:200], small_box, energies=np.zeros(200),
                           perimeters=np.ones(200), cutoff=3.0)
    voronoi_perimeters(small, small_box)  # imports freud
    cell_perimeters(small, small_types, small_box, settings)  # imports scipy.spatial
    warmup_s = time.perf_counter() - t0

    positions, types, box = tiled_structure(structure, tiles)
    rss_warm = maxrss_mb()  # interpreter + numba + freud + scipy + the input structure
    n = len(positions)
    stages = {}
    t0 = time.perf_counter()
    energies = particle_energies(positions, types, box)
    stages["energies_s"] = time.perf_counter() - t0
    stages["maxrss_after_energies_mb"] = maxrss_mb()
    # plain (freud) and radical (default) tessellations of the same structure, each timed twice interleaved
    # (best of two: the machine is shared)
    plain_s, radical_s = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        plain = voronoi_perimeters(positions, box)
        plain_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        perimeters = cell_perimeters(positions, types, box, settings)
        radical_s.append(time.perf_counter() - t0)
    stages["plain_voronoi_s"] = min(plain_s)
    stages["voronoi_s"] = min(radical_s)
    stages["radical_vs_plain_mean_rel_diff"] = float(np.mean(np.abs(perimeters / plain - 1.0)))
    stages["radical_vs_plain_pearson"] = float(np.corrcoef(perimeters, plain)[0, 1])
    del plain
    stages["maxrss_after_voronoi_mb"] = maxrss_mb()
    stages["pyvoro2_s"], stages["pyvoro2_max_rel_diff"] = pyvoro2_perimeters_timed(positions, types, box, settings,
                                                                                   perimeters)
    t0, c0 = time.perf_counter(), time.process_time()
    structural_descriptors(positions, types, box, energies=energies, perimeters=perimeters)
    stages["kernel_s"] = time.perf_counter() - t0
    stages["kernel_cpu_s"] = time.process_time() - c0
    stages["maxrss_after_kernel_mb"] = maxrss_mb()
    del energies, perimeters

    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    x = structural_descriptors(positions, types, box)
    total_s = time.perf_counter() - t0
    total_cpu_s = time.process_time() - c0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    names_ok = x.shape == (n, 176) and bool(np.all(np.isfinite(x)))
    return dict(tiles=tiles, n=n, box=box, warmup_s=warmup_s, **stages, total_s=total_s, total_cpu_s=total_cpu_s,
                us_per_particle=total_s / n * 1e6, tracemalloc_peak_mb=peak / 2**20,
                maxrss_warm_mb=rss_warm, maxrss_mb=maxrss_mb(), output_mb=x.nbytes / 2**20,
                output_ok=names_ok, load_average_after=os.getloadavg())


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return out + ("+local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pyvoro2_cell(row: dict) -> str:
    if row.get("pyvoro2_s") is None:
        return "not installed"
    return f"{row['pyvoro2_s']:.2f} ({row['pyvoro2_max_rel_diff']:.0e})"


def write_report(rows: list[dict], info: dict, command: str):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "descriptors.json").write_text(json.dumps(dict(machine=info, command=command, rows=rows,
                                                              date=info["date"]), indent=2))
    lines = [
        "# Structural descriptors: time and memory versus N",
        "",
        f"- date: {info['date']}",
        f"- command: `{command}`",
        f"- commit: {info['commit']}",
        f"- machine: {info['uname']}; {info['cores']} cores (shared with other users), numba threads "
        f"{info['numba_threads']}; load average at start {', '.join(f'{v:.2f}' for v in info['load_average'])}",
        f"- python {info['python']}, numpy {info['numpy']}, numba {info['numba']}",
        f"- structures: GlassBench T = 0.23 inherent structure (N = 1290) tiled k x k, Gaussian jitter "
        f"{JITTER} sigma; 176 descriptors (11 L, cutoff 20, all periodic images); perimeters from the radical "
        f"(power) tessellation with radii {info['radii']} for types 0/1/2 (the default settings)",
        "- Voronoi columns: radical = the default perimeters (`cell_perimeters`, regular triangulation on Qhull, "
        "float64, one core); plain = freud's unweighted Voronoi (voro++, float32) of the same structure, timed in "
        "the same process (best of two interleaved runs each); |radical / plain - 1| averaged over particles "
        "and the Pearson correlation of the two perimeter sets say how much the weights change the input.",
        "- pyvoro2 = the same radical perimeters from pyvoro2 0.8 (Voro++ power mode, periodic; the library "
        "candidate): its time (cells returned as Python dicts, perimeters summed per cell) and its largest "
        "relative difference to ours; timed after the max RSS reading of the Voronoi stage.",
        "- stages timed separately, then the full `structural_descriptors` call (energies + Voronoi + kernel) "
        "under tracemalloc (numpy/Python allocations; numba's and freud's native buffers are not traced, "
        "max RSS covers them; it only grows, so its value after each stage shows who needs the memory). Numba compile / cache load is excluded (`warm-up`).",
        "- CPU s = process CPU time summed over threads: wall times swing with the other users' load, CPU time "
        "much less (the kernel runs on numba's threads; energies and Voronoi are single-threaded).",
        "",
        "| N | box | energies [s] | radical Voronoi [s] | plain Voronoi (freud) [s] | pyvoro2 [s] (max rel. diff) "
        "| radical / plain: mean "
        "rel. diff, Pearson | kernel [s] (CPU s) | full call [s] (CPU s) | us / particle | "
        "tracemalloc peak [MB] | max RSS: imports / +energies / +Voronoi / +kernel / end [MB] | output [MB] | "
        "warm-up [s] | load after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['box']:.2f} | {r['energies_s']:.2f} | {r['voronoi_s']:.2f} | {r['plain_voronoi_s']:.2f} "
            f"| {pyvoro2_cell(r)} | {r['radical_vs_plain_mean_rel_diff']:.4f}, {r['radical_vs_plain_pearson']:.3f} | {r['kernel_s']:.2f} "
            f"({r['kernel_cpu_s']:.2f}) | {r['total_s']:.2f} ({r['total_cpu_s']:.2f}) | {r['us_per_particle']:.0f} | {r['tracemalloc_peak_mb']:.0f} | "
            f"{r['maxrss_warm_mb']:.0f} / {r['maxrss_after_energies_mb']:.0f} / {r['maxrss_after_voronoi_mb']:.0f} / "
            f"{r['maxrss_after_kernel_mb']:.0f} / {r['maxrss_mb']:.0f} | {r['output_mb']:.0f} | {r['warmup_s']:.1f} | "
            f"{r['load_average_after'][0]:.2f} |")
    big = [r for r in rows if r["n"] == TARGET_N]
    if big:
        verdict = "meets" if big[0]["total_s"] < TARGET_S else "MISSES"
        lines += ["", f"N = {TARGET_N}: full call {big[0]['total_s']:.1f} s -> {verdict} the {TARGET_S:.0f} s target."]
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        exponent = np.log(b["total_s"] / a["total_s"]) / np.log(b["n"] / a["n"])
        lines.append(f"Scaling exponent of the full call between N = {a['n']} and {b['n']}: {exponent:.2f} "
                     "(1 = linear).")
    (RESULTS / "descriptors.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, nargs="+", default=[1, 2, 4, 8], help="k: N = 1290 k^2")
    ap.add_argument("--structure", type=Path, default=STRUCTURE, help="GlassBench .npz with the N = 1290 structure")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.structure.is_file():
        sys.exit(f"benchmarks/descriptors.py: structure file not found: {args.structure}")
    if args.child is not None:
        print(json.dumps(child(args.child, args.structure)))
        return
    from tglassmlp.observables import load_descriptor_settings

    info = dict(machine(), date=datetime.datetime.now().isoformat(timespec="seconds"), commit=git_commit(),
                radii=list(load_descriptor_settings().perimeter_radii))
    command = " ".join([Path(sys.executable).name, *sys.argv])
    rows = []
    for tiles in args.tiles:  # one size at a time, each in a fresh process
        out = subprocess.run([sys.executable, __file__, "--child", str(tiles), "--structure", str(args.structure)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"N = {r['n']:6d}: full {r['total_s']:.2f} s (energies {r['energies_s']:.2f}, radical Voronoi "
              f"{r['voronoi_s']:.2f}, plain {r['plain_voronoi_s']:.2f}, kernel {r['kernel_s']:.2f}), maxRSS {r['maxrss_mb']:.0f} MB", flush=True)
    write_report(rows, info, command)
    print(f"wrote {RESULTS / 'descriptors.md'}")


if __name__ == "__main__":
    main()
