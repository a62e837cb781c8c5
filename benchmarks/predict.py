"""predict.py benchmark: wall time and peak memory of one N = 82560 structure, 11 levels, 4 networks, descriptors
included (target: under 60 s on 2 cores).

Writes benchmarks/results/predict.md and .json. Run alone (the machine's cores are shared):

    .venv/bin/python benchmarks/predict.py                 # ~1 min on 2 idle cores
    .venv/bin/python benchmarks/predict.py --tiles 1 8     # N = 1290 and 82560
    .venv/bin/python benchmarks/predict.py --models DIR    # trained model dirs (e.g. a train.py sweep folder)

Structure: the GlassBench T = 0.23 configuration (N = 1290, box 32.8962) tiled k x k (N = 1290 k^2, box 32.8962 k,
the paper's density; k = 8 gives the paper's N = 82560), its inherent structure tiled the same way. The tiled
inherent structure is itself an inherent structure of the big box: the pair interactions reach 2.5 x 0.94 sigma,
far less than the tile, so every particle sees the same neighbours and forces as in the tile (max |F| is
recorded). It is written as a shard without descriptors, so the prediction computes them (no cache).

Networks: 4 TGlassMLP of the paper's sizes with seeded random weights and a scaler fitted on the N = 1290
structure (the cost of a forward pass does not depend on the weights), or trained model dirs with --models.
The mean constraint runs with tolerance 0 (and a small step), so every level of every network takes all 6
updates (7 forward passes): the worst case. Timed: the whole ``predict_structures`` call (read, descriptors, standardisation,
network passes, HDF5 write) in a fresh process per size, after a warm-up on a tiny structure (numba compile or
cache load, torch and freud imports); per-stage times come from the call's own timing record.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RESULTS = ROOT / "benchmarks" / "results"
STRUCTURE = ROOT.parent / "shared" / "data" / "glassbench" / "N1290T0.23_202_tc05.npz"
LEVELS = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45]
N_NETWORKS = 4
TARGET_N = 82560
TARGET_S = 60.0
CHUNK = 2048


def WORST_CASE():
    """Mean constraint that always takes its 6 updates (7 forward passes per level): tolerance 0 never counts as
    converged, and a small step keeps every input inside [0, 1] so that none stops early at a bound. The cost of
    a pass does not depend on the step."""
    from tglassmlp.predict import MeanConstraint

    return MeanConstraint(tolerance=0.0, step=1e-3, bounds=None)

# the descriptor benchmark's full call at N = 82560 on this machine (benchmarks/results/descriptors.json), for the ratio
DESCRIPTORS_JSON = RESULTS / "descriptors.json"


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def tiled_shard(structure: Path, tiles: int, path: Path) -> dict:
    """Write the k x k tiled GlassBench structure as a shard; returns its size and the inherent max |F|."""
    from tglassmlp.data import read_glassbench, write_shard
    from tglassmlp.physics import forces

    gb = read_glassbench(structure)
    box = gb.box
    shifts = np.array([(a, b) for a in range(tiles) for b in range(tiles)], dtype=float) * box

    def tile(x):
        return (np.mod(x, box)[None] + shifts[:, None]).reshape(-1, 2)

    positions, inherent = tile(gb.positions), tile(gb.inherent_positions)
    types = np.tile(gb.types, tiles * tiles)
    max_force = float(np.abs(forces(inherent, types, box * tiles)).max())
    write_shard(path, {"positions": positions, "types": types, "inherent_positions": inherent},
                {"temperature": gb.temperature, "box": box * tiles, "seed": -1, "config": {"benchmark": "predict"},
                 "source": f"glassbench:{structure.name} tiled {tiles}x{tiles}"}, overwrite=True)
    return {"n": len(types), "box": box * tiles, "inherent_max_force": max_force}


def synthetic_models(structure: Path, out: Path, n_networks: int) -> Path:
    """n model dirs: paper-sized TGlassMLP, seeded weights, scaler fitted on the N = 1290 structure."""
    import torch  # noqa: F401

    from tglassmlp.data import read_glassbench
    from tglassmlp.model.network import TGlassMLP
    from tglassmlp.observables import DescriptorScaler, descriptor_names, structural_descriptors
    from tglassmlp.predict import save_model_dir

    gb = read_glassbench(structure)
    desc = structural_descriptors(gb.inherent_positions, gb.types, gb.box)
    scaler = DescriptorScaler(names=descriptor_names()).fit(desc[gb.types == 0])
    for seed in range(n_networks):
        net = TGlassMLP(n_descriptors=scaler.n_kept, seed=seed)
        net.set_state_normalization([0.6, 0.5, 0.45] * 4, [0.9] * 3 + [0.8] * 3 + [0.65] * 3 + [0.5] * 3)
        save_model_dir(out / f"seed{seed}", {"n_descriptors": scaler.n_kept}, net, scaler)
    return out


def child(tiles: int, structure: Path, models: Path | None, threads: int) -> dict:
    import torch

    from tglassmlp.predict import DirectoryEnsemble, MeanConstraint, predict_structures, read_prediction

    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="tglassmlp-bench-predict-"))
    # warm-up on the plain N = 1290 structure: numba compile / cache load, freud, torch kernels
    t0 = time.perf_counter()
    model_dir = models or synthetic_models(structure, tmp / "models", N_NETWORKS)
    warm = DirectoryEnsemble(model_dir).load()
    predict_structures(warm, structure, tmp / "warm", levels=LEVELS[:2], cache_dir=None,
                       constraint=MeanConstraint(max_iterations=0))
    warmup_s = time.perf_counter() - t0
    info = tiled_shard(structure, tiles, tmp / "T0.230" / "s0000.h5")
    rss_before = maxrss_mb()

    t0, c0 = time.perf_counter(), time.process_time()
    ensemble = DirectoryEnsemble(model_dir).load()
    load_s = time.perf_counter() - t0
    result = predict_structures(ensemble, tmp / "T0.230" / "s0000.h5", tmp / "out", levels=LEVELS, cache_dir=None,
                                constraint=WORST_CASE(), chunk_size=CHUNK, save_networks=True)
    total_s = time.perf_counter() - t0
    cpu_s = time.process_time() - c0
    row = result["structures"][0]
    d = read_prediction(row["file"])
    n0 = int(d["reference_index"].size)
    evaluations = int((d["constraint"]["iterations"] + 1).sum())  # (network, level) forward passes over N_0
    return dict(tiles=tiles, **info, n_reference=n0, n_networks=len(ensemble), n_levels=len(LEVELS),
                chunk_size=CHUNK, torch_threads=threads, models=str(models) if models else "synthetic",
                warmup_s=warmup_s, ensemble_load_s=load_s, **{f"stage_{k}": v for k, v in row["timing"].items()},
                total_s=total_s, cpu_s=cpu_s, level_evaluations=evaluations,
                particle_evaluations_per_s=evaluations * n0 / row["timing"]["predict_s"],
                maxrss_before_mb=rss_before, maxrss_mb=maxrss_mb(), file_mb=Path(row["file"]).stat().st_size / 2**20,
                converged_fraction=row["converged_fraction"], load_average_after=os.getloadavg())


def write_report(rows: list[dict], info: dict, command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    descriptors_ref = None
    if DESCRIPTORS_JSON.is_file():
        ref = [r for r in json.loads(DESCRIPTORS_JSON.read_text())["rows"] if r["n"] == TARGET_N]
        descriptors_ref = ref[0] if ref else None
    (RESULTS / "predict.json").write_text(json.dumps(dict(machine=info, command=command, rows=rows,
                                                          descriptors_benchmark_n82560=descriptors_ref,
                                                          target_s=TARGET_S), indent=2))
    la = info["load_average"]
    lines = [
        "# predict.py: one structure, 11 levels, 4 networks, descriptors included",
        "",
        f"- date: {info['date']}; git commit {info['git_commit']}",
        f"- command: `{command}`",
        f"- machine: {info['uname']}; CPU {info['cpu_model']}; {info['cpu_count']} cores (shared with other users); "
        f"load average at start {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}",
        f"- python {info['python']}, torch {info['torch']}, numpy {info['numpy']}, numba {info['numba']} (descriptors: "
        "numba's default threads, all cores)",
        "- structure: GlassBench T = 0.23 (N = 1290) and its inherent structure tiled k x k (the tiled inherent "
        "structure is an inherent structure of the big box: its max |F| equals the tile's, i.e. that of "
        "GlassBench's stored inherent structure under this project's potential), written as a shard without "
        "descriptors: the call computes them (energies, Voronoi, coarse-graining; no cache)",
        f"- networks: {rows[0]['models']} (paper sizes); levels {LEVELS}; mean constraint "
        "with tolerance 0 and a small step, so that every (network, level) takes all 6 updates = 7 forward passes "
        "(the worst case); "
        f"chunks of {rows[0]['chunk_size']} particles",
        "- timed: `predict_structures` (read, descriptors, standardisation, forward passes, HDF5 write) in a fresh "
        "process after a warm-up on the N = 1290 structure; CPU s = process CPU time over all threads",
        "",
        "| N | torch threads | max F inherent | read [s] | descriptors [s] | networks [s] | write [s] | total [s] (CPU s) | "
        "particle-level evaluations / s | max RSS before / end [MB] | file [MB] | load after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['torch_threads']} | {r['inherent_max_force']:.1e} | {r['stage_read_s']:.2f} | "
            f"{r['stage_descriptors_s']:.2f} | {r['stage_predict_s']:.2f} | {r['stage_write_s']:.2f} | "
            f"{r['total_s']:.2f} ({r['cpu_s']:.2f}) | {r['particle_evaluations_per_s']:.3g} | "
            f"{r['maxrss_before_mb']:.0f} / {r['maxrss_mb']:.0f} | {r['file_mb']:.1f} | {r['load_average_after'][0]:.2f} |")
    big = sorted((r for r in rows if r["n"] == TARGET_N), key=lambda r: r["total_s"])
    if big:
        b = big[0]
        verdict = "meets" if b["total_s"] < TARGET_S else "MISSES"
        lines += ["", f"N = {TARGET_N}, {b['torch_threads']} torch thread(s): {b['total_s']:.1f} s wall ({b['cpu_s']:.1f} "
                      f"CPU s) -> {verdict} the "
                      f"{TARGET_S:.0f} s target (ratio {b['total_s'] / TARGET_S:.2f} of the budget).", "", "Ratios at N = 82560:",
                  f"- descriptors / total: {b['stage_descriptors_s'] / b['total_s']:.2f}; networks (4 x 11 levels x "
                  f"7 passes over {b['n_reference']} type-0 particles) / total: {b['stage_predict_s'] / b['total_s']:.2f}",
                  f"- networks per (network, level, pass): {b['stage_predict_s'] / b['level_evaluations'] * 1e3:.1f} ms"]
        if descriptors_ref:
            lines.append(f"- descriptors here / the descriptor benchmark's full call at N = 82560 "
                         f"({descriptors_ref['total_s']:.1f} s, its own run): "
                         f"{b['stage_descriptors_s'] / descriptors_ref['total_s']:.2f}; peak RSS here / there "
                         f"({descriptors_ref['maxrss_mb']:.0f} MB): {b['maxrss_mb'] / descriptors_ref['maxrss_mb']:.2f}")
        if len(big) >= 2:
            w = big[-1]
            lines.append(f"- networks with {w['torch_threads']} / {b['torch_threads']} torch thread(s): "
                         f"{w['stage_predict_s'] / b['stage_predict_s']:.2f} in wall time, "
                         f"{w['cpu_s'] / b['cpu_s']:.2f} in CPU time of the whole call")
    same = [r for r in rows if r["torch_threads"] == (big[0]["torch_threads"] if big else rows[0]["torch_threads"])]
    if len(same) >= 2:
        a, b = same[0], same[-1]
        exponent = np.log(b["total_s"] / a["total_s"]) / np.log(b["n"] / a["n"])
        lines.append(f"- scaling exponent of the total between N = {a['n']} and {b['n']}: {exponent:.2f} (1 = linear)")
    (RESULTS / "predict.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, nargs="+", default=[1, 8], help="k: N = 1290 k^2")
    ap.add_argument("--structure", type=Path, default=STRUCTURE, help="GlassBench .npz with the N = 1290 structure")
    ap.add_argument("--models", type=Path, default=None, help="folder of trained model dirs (default: synthetic)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="torch intra-op threads, one run each (numba's descriptor threads stay at its default)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.structure.is_file():
        sys.exit(f"benchmarks/predict.py: structure file not found: {args.structure}")
    if args.child is not None:
        print(json.dumps(child(args.child, args.structure, args.models, args.threads[0])))
        return
    import numba
    import torch

    from tglassmlp.tracking import git_commit

    info = dict(machine_info(numpy=np.__version__, numba=numba.__version__, torch=torch.__version__),
                date=datetime.datetime.now().isoformat(timespec="seconds"), load_average=os.getloadavg(),
                git_commit=git_commit()[0])
    command = " ".join(["python", *sys.argv])
    rows = []
    for tiles in args.tiles:  # each size and thread count in a fresh process, so that its peak RSS is its own
        for threads in args.threads:
            cmd = [sys.executable, __file__, "--child", str(tiles), "--structure", str(args.structure),
                   "--threads", str(threads)] + (["--models", str(args.models)] if args.models else [])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"benchmarks/predict.py: N = 1290 x {tiles}^2 failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"N = {r['n']:6d}, {threads} torch thread(s): total {r['total_s']:.2f} s (descriptors "
                  f"{r['stage_descriptors_s']:.2f}, networks {r['stage_predict_s']:.2f}), CPU {r['cpu_s']:.1f} s, "
                  f"maxRSS {r['maxrss_mb']:.0f} MB", flush=True)
    write_report(rows, info, command)
    print(f"wrote {RESULTS / 'predict.md'}")


if __name__ == "__main__":
    main()
