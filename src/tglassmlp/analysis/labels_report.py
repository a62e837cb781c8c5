"""What a dataset's labels look like: <C_B>(t) per temperature, tau_alpha^BB, the master-curve collapse, and
the correlation of the propensity with a simple structural baseline (the coarse-grained energy).

    python -m tglassmlp.analysis.labels_report data/demo outputs/reports/demo
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from tglassmlp.atomic import write_json_atomic, write_text_atomic
from tglassmlp.data.shards import parse_shard_path, read_shard
from tglassmlp.observables.labels import labels_at_levels
from tglassmlp.observables.tts import TimeTemperatureSuperposition, master_curve

BASELINE = "energy_all_L2"


def temperature_curves(root, reference_type: int = 0) -> dict:
    """{T: (times (T_n,) [tau], <C_B>(t) (T_n,), [(shard path, propensity (T_n, N), types (N,)), ...])}.

    <C_B>(t) is the reference-type mean propensity averaged over the temperature's structures; shards
    flagged as not equilibrated are left out (with their paths listed under the key 'skipped').
    """
    by_t = defaultdict(list)
    skipped = []
    for path in sorted(Path(root).glob("T*/s*.h5")):
        temperature, _ = parse_shard_path(path)
        shard = read_shard(path)
        if "propensity" not in shard.fields:
            continue
        if not shard.attrs.get("equilibrated", 1):
            skipped.append(str(path))
            continue
        by_t[temperature].append((path, shard["times"], shard["propensity"].astype(np.float64),
                                  shard["types"].astype(np.int64)))
    curves = {}
    for temperature, items in sorted(by_t.items(), reverse=True):
        times = items[0][1]
        for path, t, _, _ in items:
            if not np.allclose(t, times):
                raise ValueError(f"{path}: times differ from the other structures at T = {temperature:g}")
        curve = np.mean([p[:, ty == reference_type].mean(axis=1) for _, _, p, ty in items], axis=0)
        curves[temperature] = (times, curve, [(path, p, ty) for path, _, p, ty in items])
    if skipped:
        curves["skipped"] = skipped
    return curves


def label_report(root, out_dir, levels=None, baseline: str = BASELINE, labels=None) -> dict:
    """Write ``master_curve.png``, ``labels_report.md`` and ``labels_report.json`` to ``out_dir``.

    ``labels``: the labels settings (the ``labels`` config node: ``levels``, ``tts``); None: the defaults
    (``conf/labels/default.yaml``). ``levels`` overrides theirs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tglassmlp.atomic import save_figure_atomic as save_figure

    from tglassmlp.observables.descriptors import descriptor_names, structural_descriptors

    curves = temperature_curves(root)
    skipped = curves.pop("skipped", [])
    if not curves:
        raise FileNotFoundError(f"no shard with propensities under {root}")
    if labels is None:
        from tglassmlp.defaults import group_config

        labels = group_config("labels")
    labels_cfg = labels
    levels = list(labels_cfg.levels) if levels is None else list(levels)
    tts = TimeTemperatureSuperposition(**labels_cfg.tts).compute({T: (t, c) for T, (t, c, _) in curves.items()})
    column = descriptor_names().index(baseline)
    rows = []
    baseline_column: dict[Path, np.ndarray] = {}  # descriptors of a structure once, not once per level

    def baseline_values(path, types):
        if path not in baseline_column:
            shard = read_shard(path, fields=["inherent_positions", "types"])
            baseline_column[path] = structural_descriptors(shard["inherent_positions"], types, shard.box)[:, column]
        return baseline_column[path]

    for T, (times, curve, items) in curves.items():
        for level in levels:
            pearson = []
            for path, propensity, types in items:
                t_star, labels = labels_at_levels(times, propensity, curve, [level])
                if not np.isfinite(t_star[0]):
                    break
                x = baseline_values(path, types)
                sel = types == 0
                pearson.append(np.corrcoef(x[sel], labels[0, sel])[0, 1])
            if pearson:
                rows.append({"T": T, "level": level, "time": float(t_star[0]), "n_structures": len(pearson),
                             "pearson_mean": float(np.mean(pearson)), "pearson_std": float(np.std(pearson))})

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for T, (times, curve, items) in curves.items():
        line = axes[0].semilogx(times, curve, "o-", ms=3, label=f"T = {T:g} ({len(items)} structures)")[0]
        axes[1].semilogx(times / tts.tau_alpha[T], curve, "o", ms=3, color=line.get_color(),
                         label=f"T = {T:g}, tau = {tts.tau_alpha[T]:.3g}")
    x = np.geomspace(1e-3, 1e1, 200)
    axes[1].semilogx(x, master_curve(x, tts.beta), "k--", label=f"exp(-ln2 (t/tau)^{tts.beta:.2f})")
    axes[0].set(xlabel="time t [tau_LJ]", ylabel="<C_B>(t) (type 0)", title="bond-breaking correlation")
    axes[1].set(xlabel="t / tau_alpha^BB", ylabel="<C_B>", title="time-temperature superposition")
    for ax in axes:
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    save_figure(fig, out / "master_curve.png", dpi=120)

    report = {"root": str(root), "tau_alpha": tts.tau_alpha, "beta": tts.beta, "arrhenius": tts.arrhenius,
              "skipped_not_equilibrated": skipped, "baseline": baseline, "rows": rows}
    try:
        report["glass_transition_temperature"] = tts.glass_transition_temperature()
    except ValueError as exc:
        report["glass_transition_temperature"] = None
        report["glass_transition_note"] = str(exc)
    write_json_atomic(out / "labels_report.json", report, indent=2, default=float)
    lines = [f"# Labels of {root}", "", "| T | tau_alpha^BB [tau] | structures |", "|---|---|---|"]
    lines += [f"| {T:g} | {tts.tau_alpha[T]:.4g} | {len(curves[T][2])} |" for T in curves]
    lines += ["", f"master curve exp(-ln2 (t/tau)^beta): beta = {tts.beta:.3f}", "",
              f"Pearson correlation of the propensity with `{baseline}` (type-0 particles, mean +- std over "
              "structures):", "", "| T | <C_B> | t [tau] | Pearson |", "|---|---|---|---|"]
    lines += [f"| {r['T']:g} | {r['level']:.2f} | {r['time']:.4g} | {r['pearson_mean']:+.3f} +- {r['pearson_std']:.3f} |"
              for r in rows]
    if skipped:
        lines += ["", f"left out (not equilibrated): {', '.join(skipped)}"]
    write_text_atomic(out / "labels_report.md", "\n".join(lines) + "\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    label_report(args.root, args.out_dir)
    print((Path(args.out_dir) / "labels_report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
