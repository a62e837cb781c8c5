"""Swap MC kernel A/B: this commit's numba kernel against an earlier commit's, on the same chains.

Writes benchmarks/results/swap_kernel_ab.md and .json. The old kernel is imported from a git worktree of the
old commit in a subprocess (PYTHONPATH=<worktree>/src), the new one from this checkout in another subprocess;
both get the same configurations, seeds and frozen step, and timed runs alternate old / new (a change of the
machine's load hits both; ratios of medians are what count on a shared machine). Then the chains are compared:
1e5 sweeps at N = 1290 and a shorter run at N = 82560 from the same start, positions / types / energy traces.

    git worktree add /tmp/swap_old 56ade39
    nice -n 10 .venv/bin/python benchmarks/swap_kernel_ab.py --old-tree /tmp/swap_old --old-commit 56ade39
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SIZES = (1290, 25800, 82560)
TEMPERATURE = 0.3
MOVES_PER_TIMING = 1_300_000
REPEATS = 3
# the chain comparison: sweeps at each N (1e5 at N = 1290 as the issue asks; 82560 is ~64x dearer per sweep)
EQUALITY_SWEEPS = {1290: 100_000, 82560: 200}


def worker():
    """Line-oriented JSON server on stdin / stdout around one SwapMonteCarlo of whichever tglassmlp is imported."""
    from tglassmlp.physics.swap_mc import SwapMonteCarlo

    mc = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "reset":
            with np.load(cmd["npz"]) as z:
                pos, types, box = z["positions"], z["types"], float(z["box"])
            mc = SwapMonteCarlo(TEMPERATURE, seed=cmd["seed"], max_displacement=cmd["d"])
            mc.reset(pos, types, box)
            mc.run(1, swaps=cmd["swaps"])  # compiles (or loads the cache) outside the timing
            reply = dict(ok=True)
        elif cmd["cmd"] == "run":
            t0 = time.perf_counter()
            mc.run(cmd["sweeps"], swaps=cmd["swaps"], record_every=cmd.get("record_every"))
            dt = time.perf_counter() - t0
            reply = dict(rate=len(mc.types) * cmd["sweeps"] / dt, seconds=dt)
        elif cmd["cmd"] == "dump":
            np.savez(cmd["npz"], positions=mc.positions, types=mc.types, trace=mc.energy_trace,
                     counters=mc.counters)
            reply = dict(ok=True)
        else:
            return
        print(json.dumps(reply), flush=True)


class Kernel:
    def __init__(self, src: Path):
        env = dict(os.environ, PYTHONPATH=str(src))
        self.p = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)

    def send(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return cmd

    def recv(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("A/B worker died")
        return json.loads(line)

    def call(self, **cmd):
        self.send(**cmd)
        return self.recv()

    def close(self):
        self.send(cmd="quit")
        self.p.wait()


def prepare(n: int, seed: int, path: Path) -> float:
    """A configuration at T = 0.3 (melted at T = 2, annealed; d adapted then frozen), saved to ``path``."""
    from tglassmlp.physics import load_system
    from tglassmlp.physics.swap_mc import SwapMonteCarlo, _random_start

    system = load_system()
    box = system.box_for(n)
    rng = np.random.default_rng(seed)
    pos, types = _random_start(n, box, system.composition_for(n), rng)
    mc = SwapMonteCarlo(2.0, rng=rng).reset(pos, types, box)
    anneal = 400 if n <= 1290 else 20
    mc.adapt(anneal // 4)
    mc.temperature = TEMPERATURE
    mc.adapt(anneal)
    np.savez(path, positions=mc.positions, types=mc.types, box=mc.box)
    return mc.max_displacement


def compare(kernels, tmp: Path, tag: str) -> dict:
    out = {}
    for name, k in kernels.items():
        k.call(cmd="dump", npz=str(tmp / f"{tag}_{name}.npz"))
        with np.load(tmp / f"{tag}_{name}.npz") as z:
            out[name] = {f: z[f] for f in z.files}
    o, nw = out["old"], out["new"]
    return dict(types_equal=bool(np.array_equal(o["types"], nw["types"])),
                counters_equal=bool(np.array_equal(o["counters"], nw["counters"])),
                positions_max_abs_diff=float(np.max(np.abs(o["positions"] - nw["positions"]))),
                positions_bitwise=bool(np.array_equal(o["positions"], nw["positions"])),
                energy_trace_max_rel_diff=float(np.max(np.abs(o["trace"] - nw["trace"]) / np.abs(o["trace"]))),
                accepted_moves=[int(x) for x in nw["counters"][[1, 3]]])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--old-tree", default="/tmp/swap_old", help="git worktree of the old commit")
    ap.add_argument("--old-commit", default="56ade39")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=REPEATS)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--equality-sweeps-1290", type=int, default=EQUALITY_SWEEPS[1290])
    ap.add_argument("--equality-sweeps-82560", type=int, default=EQUALITY_SWEEPS[82560])
    args = ap.parse_args(argv)
    if args.worker:
        return worker()
    sys.path.insert(0, str(HERE))
    from machine import machine_info

    new_src = HERE.parent / "src"
    old_src = Path(args.old_tree) / "src"
    head = subprocess.run(["git", "-C", str(old_src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not head.startswith(args.old_commit):
        raise SystemExit(f"{args.old_tree} is at {head or 'no git tree'}, not {args.old_commit}: "
                         f"`git worktree add {args.old_tree} {args.old_commit}`")
    this = subprocess.run(["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", "../src"],
                                capture_output=True, text=True).stdout.strip())
    res = dict(command=" ".join([sys.executable, *sys.argv]), date=datetime.datetime.now().isoformat(timespec="seconds"),
               machine=machine_info(numpy=np.__version__), load_average_start=os.getloadavg(), old_commit=head,
               new_commit=this + (" + uncommitted changes in src/" if dirty else ""), temperature=TEMPERATURE,
               repeats=args.repeats, rows=[], equality=[])
    tmp = Path(tempfile.mkdtemp(prefix="swap_ab_"))
    kernels = {"old": Kernel(old_src), "new": Kernel(new_src)}
    steps = {}  # N -> the frozen step of its prepared configuration
    try:
        for n in args.sizes:
            d = steps[n] = prepare(n, args.seed, tmp / f"start_{n}.npz")
            sweeps = max(2, MOVES_PER_TIMING // n)
            for swaps in (True, False):
                for k in kernels.values():
                    k.call(cmd="reset", npz=str(tmp / f"start_{n}.npz"), seed=args.seed + 1, d=d, swaps=swaps)
                rates = {"old": [], "new": []}
                for _ in range(args.repeats):
                    for name, k in kernels.items():
                        rates[name].append(k.call(cmd="run", sweeps=sweeps, swaps=swaps)["rate"])
                row = dict(n=n, swaps=swaps, sweeps_per_timing=sweeps, old=rates["old"], new=rates["new"],
                           old_median=float(np.median(rates["old"])), new_median=float(np.median(rates["new"])),
                           **compare(kernels, tmp, f"t{n}{swaps}"))
                row["ratio"] = row["new_median"] / row["old_median"]
                res["rows"].append(row)
                print(f"N={n} swaps={swaps}: old {row['old_median'] / 1e6:.3f}, new {row['new_median'] / 1e6:.3f} "
                      f"M moves/s, new/old {row['ratio']:.2f}; positions max diff {row['positions_max_abs_diff']:.2g}",
                      flush=True)
        for n, n_sweeps in ((1290, args.equality_sweeps_1290), (82560, args.equality_sweeps_82560)):
            if n_sweeps <= 0:
                continue
            if n not in steps:
                steps[n] = prepare(n, args.seed, tmp / f"start_{n}.npz")
            for k in kernels.values():
                k.call(cmd="reset", npz=str(tmp / f"start_{n}.npz"), seed=args.seed + 2, d=steps[n], swaps=True)
            t0 = time.perf_counter()
            # both chains at once (two processes): the comparison costs the wall time of one
            for k in kernels.values():
                k.send(cmd="run", sweeps=n_sweeps, swaps=True, record_every=10)
            secs = {name: k.recv()["seconds"] for name, k in kernels.items()}
            eq = dict(n=n, sweeps=n_sweeps, swaps=True, seconds=secs, wall_s=time.perf_counter() - t0,
                      **compare(kernels, tmp, f"eq{n}"))
            res["equality"].append(eq)
            print(f"equality N={n}, {n_sweeps} sweeps: {eq}", flush=True)
    finally:
        for k in kernels.values():
            k.close()
    res["load_average_end"] = os.getloadavg()
    write(res)


def write(res: dict):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "swap_kernel_ab.json").write_text(json.dumps(res, indent=1, default=str))
    m = res["machine"]
    lines = ["# Swap MC kernel A/B: Verlet-list kernel vs the cell-list kernel of 56ade39", "",
             f"- date: {res['date']}", f"- command: `{res['command']}`",
             f"- old: commit {res['old_commit']} (imported from its worktree in a subprocess); new: {res['new_commit']}",
             f"- machine: {m['uname']}; {m['cpu_model']}; {m['cpu_count']} cores shared with other developers; "
             f"load average at start {', '.join(f'{x:.2f}' for x in res['load_average_start'])}, at the end "
             f"{', '.join(f'{x:.2f}' for x in res['load_average_end'])}",
             f"- T = {res['temperature']}, configurations melted at T = 2 and annealed (400 sweeps at N = 1290, 20 "
             "above), d adapted then frozen; old and new start from the same configuration and seed; "
             f"{res['repeats']} timed runs of each (~1.3e6 attempted moves per run), alternating old / new, one core "
             "each; medians. 'max |dx|' = largest difference of a coordinate between the two chains after all timed "
             "runs [sigma].", "",
             "| N | swaps | old [M moves/s] | new [M moves/s] | new / old | old runs | new runs | max abs dx | types equal |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        runs = {k: ", ".join(f"{x / 1e6:.3f}" for x in r[k]) for k in ("old", "new")}
        lines.append(f"| {r['n']} | {'yes' if r['swaps'] else 'no'} | {r['old_median'] / 1e6:.3f} | "
                     f"{r['new_median'] / 1e6:.3f} | {r['ratio']:.2f} | {runs['old']} | {runs['new']} | "
                     f"{r['positions_max_abs_diff']:.2g} | {r['types_equal']} |")
    lines += ["", "## Same chain (T = 0.3, swaps, both kernels from the same start and seed)", "",
              "| N | sweeps | accepted displacements / swaps | max abs dx [sigma] | positions bitwise | types equal | "
              "counters equal | max rel. diff of E trace |", "|---|---|---|---|---|---|---|---|"]
    for e in res["equality"]:
        lines.append(f"| {e['n']} | {e['sweeps']} | {e['accepted_moves'][0]} / {e['accepted_moves'][1]} | "
                     f"{e['positions_max_abs_diff']:.2g} | {e['positions_bitwise']} | {e['types_equal']} | "
                     f"{e['counters_equal']} | {e['energy_trace_max_rel_diff']:.2g} |")
    (RESULTS / "swap_kernel_ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
