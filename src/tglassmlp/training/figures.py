"""The figures of one training run (artefacts ``figures/``): predicted against MD propensity per state point,
and one test structure coloured by both."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_figures(records, dm, out_dir: Path) -> list[Path]:
    """Predicted vs true propensity per state point (scatter grid) and one test structure coloured by true and
    predicted propensity at its middle state point. PNG files in ``out_dir``; matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tglassmlp.atomic import save_figure_atomic as save_figure
    from tglassmlp.statepoints import state_point_name
    from tglassmlp.metrics import pearson

    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[float, float], list] = {}
    for r in records:
        groups.setdefault((r.temperature, r.level), []).append(r)
    if not groups:
        return []
    paths = []
    keys = sorted(groups)
    ncol = min(4, len(keys))
    nrow = -(-len(keys) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pred = np.concatenate([r.prediction for r in groups[key]])
        true = np.concatenate([r.target for r in groups[key]])
        ax.scatter(true, pred, s=3, alpha=0.4, rasterized=True)
        lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        rho = np.nanmean([pearson(r.prediction, r.target) for r in groups[key]])
        ax.set_title(f"{state_point_name(*key)}  rho={rho:.2f}", fontsize=9)
        ax.set_xlabel("true propensity")
        ax.set_ylabel("predicted")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    paths.append(out_dir / "scatter_pred_vs_true.png")
    save_figure(fig, paths[-1], dpi=110)

    key = keys[len(keys) // 2]
    rec = groups[key][0]
    s = dm.structures[rec.structure]
    pos = np.mod(s.positions, s.box)
    vmin, vmax = float(min(rec.target.min(), rec.prediction.min())), float(max(rec.target.max(), rec.prediction.max()))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    for ax, values, title in ((axes[0], rec.target, "MD (true)"), (axes[1], rec.prediction, "tGlassMLP")):
        # blue = arrested (C_B ~ 1), red = mobile: the paper's colour convention
        sc = ax.scatter(pos[:, 0], pos[:, 1], c=values, cmap="coolwarm_r", vmin=vmin, vmax=vmax,
                        s=max(4.0, 6000.0 / len(pos)))
        ax.set_aspect("equal")
        ax.set_xlim(0, s.box)
        ax.set_ylim(0, s.box)
        ax.set_title(f"{title}: {state_point_name(*key)}, structure {s.index}", fontsize=9)
    fig.colorbar(sc, ax=axes, shrink=0.8, label="propensity $C_B^i$")
    paths.append(out_dir / "snapshot_true_vs_pred.png")
    save_figure(fig, paths[-1], dpi=110)
    return paths
