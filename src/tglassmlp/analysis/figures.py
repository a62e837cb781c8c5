"""The paper's figures from the analysis results of ``tglassmlp.analysis.job`` (matplotlib, Agg, PNG).

Every function takes plain results (dicts of arrays keyed by temperature), writes one PNG atomically and
returns its path. Conventions: one colour per temperature (the same in every figure), MD as points with
bootstrap error bars, network predictions as lines with the std over networks as error bars or bands,
dashed vertical lines at tau_alpha^BB. Axes carry units (sigma, tau = reduced LJ time).

| file | paper |
|---|---|
| fig02_pearson.png | Fig. 2: rho_P(t) per T, rho_max (label-noise ceiling) dashed |
| fig03_snapshots.png | Fig. 3: propensity maps, MD against prediction |
| fig04_chi4.png, fig06_chi4_predicted.png | Figs. 4, 6: chi_4(t) |
| fig05_snapshots_time.png | Fig. 5: predicted relaxation at the lowest T |
| fig07_xi4.png | Fig. 7: S_4(q) with Ornstein-Zernike fits over the windows they used, xi_4(t) |
| fig08_chords.png | Fig. 8: <xi_chord>(t) |
| fig09_attention.png | Fig. 9: P_int(L), xi_int(T) |
| fig10_bottleneck_levels.png, fig11_bottleneck_temperatures.png | Figs. 10, 11 |
| fig12_length_scales.png | Fig. 12 |
| fig13_master_curve.png | Fig. 13 (``analysis.labels_report``) |
| fig14_prefactor_A.png | Fig. 14 |
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tglassmlp.atomic import atomic_path, save_figure_atomic  # noqa: E402

#: Method factors of Fig. 12 (paper note [52]): chords measure a diameter (~2 xi_4), xi_int a relative scale.
CHORD_FACTOR = 0.5
XI_INT_FACTOR = 1.5
#: propensity colour map: red = active (low C_B), blue = arrested (C_B ~ 1), as in the paper's snapshots
PROPENSITY_CMAP = "RdYlBu"


#: save a figure atomically, then close it
save = save_figure_atomic


def temperature_colors(temperatures: Sequence[float]) -> dict[float, tuple]:
    """One colour per temperature, dark (low T) to light (high T)."""
    temps = sorted({round(float(t), 3) for t in temperatures})
    cmap = plt.get_cmap("plasma")
    return {t: cmap(0.85 * i / max(1, len(temps) - 1)) for i, t in enumerate(temps)}


def _tau_lines(ax, tts, colors, temperatures):
    for t in temperatures:
        try:
            tau = tts.relaxation_time(t)
        except ValueError:
            continue
        ax.axvline(tau, color=colors[t], ls="--", lw=0.8, alpha=0.7)


def _finite(x, *ys):
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    for y in ys:
        ok &= np.isfinite(np.asarray(y, dtype=float))
    return ok


def _errorbar(ax, x, y, err, **kw):
    ok = _finite(x, y)
    e = np.where(np.isfinite(err), err, 0.0)[ok] if err is not None else None
    return ax.errorbar(np.asarray(x)[ok], np.asarray(y)[ok], yerr=e, **kw)


def _legend_note(ax, has_md: bool, has_pred: bool):
    from matplotlib.lines import Line2D

    handles = []
    if has_md:
        handles.append(Line2D([], [], color="k", marker="o", ls="none", label="MD (error: bootstrap over structures)"))
    if has_pred:
        handles.append(Line2D([], [], color="k", ls="-", label="tGlassMLP (error: std over networks)"))
    handles.append(Line2D([], [], color="grey", ls="--", lw=0.8, label="tau_alpha^BB"))
    return handles


def _outside_legend(ax, handles):
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _time_series(ax, key, md_fields, md_obs, pred, pred_obs, colors, level_range=None, pred_only=False):
    """Plot obs[key] against time for MD (points) and predictions (lines)."""
    for t in sorted(set(md_fields) | set(pred), reverse=True):
        label_done = False
        if t in md_fields and not pred_only:
            f, o = md_fields[t], md_obs[t]
            sel = np.ones(f.levels.size, bool) if level_range is None else \
                (f.levels > level_range[0]) & (f.levels < level_range[1])
            _errorbar(ax, f.times[sel], o[key][sel], o[key + "_err"][sel], fmt="o", ms=4, color=colors[t],
                      capsize=2, label=f"T = {t:g}")
            label_done = True
        if t in pred:
            f, o = pred[t], pred_obs[t]
            sel = np.ones(f.levels.size, bool) if level_range is None else \
                (f.levels > level_range[0]) & (f.levels < level_range[1])
            x, y, e = f.times[sel], o[key][sel], o[key + "_err"][sel]
            ok = _finite(x, y)
            if ok.sum():
                ax.plot(x[ok], y[ok], "-", color=colors[t], lw=1.5, label=None if label_done else f"T = {t:g}")
                ee = np.where(np.isfinite(e), e, 0)[ok]
                ax.fill_between(x[ok], (y - 0)[ok] - ee, y[ok] + ee, color=colors[t], alpha=0.2, lw=0)


# ------------------------------------------------------------------------------------------------ figures
def pearson_figure(path, pred, pearson, tts, colors, dpi=120):
    """Fig. 2: rho_P against t for every temperature with MD truth on structures not used in training."""
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    shown, has_ceiling = [], False
    for t in sorted(pearson, reverse=True):
        p = pearson[t]
        if not np.any(np.isfinite(p["test"])):
            continue
        f = pred[t]
        _errorbar(ax, f.times, p["test"], p["test_err"], fmt="-s", ms=4, color=colors[t], capsize=2,
                  label=f"T = {t:g} ({p['test_n']} test structure{'s' if p['test_n'] != 1 else ''})")
        ceiling = np.asarray(p.get("rho_max_test", np.full(len(f.times), np.nan)), dtype=np.float64)
        ok = _finite(f.times, ceiling)
        if ok.sum():  # the label-noise ceiling of the same structures and labels (docs/label-ceiling.md)
            ax.plot(np.asarray(f.times)[ok], ceiling[ok], "--", color=colors[t], lw=1)
            has_ceiling = True
        shown.append(t)
    _tau_lines(ax, tts, colors, shown)
    ax.set(xscale="log", xlabel="time t [tau]", ylabel="Pearson rho_P (prediction vs MD)",
           title="Fig. 2: prediction quality on held-out structures")
    ax.axhline(0, color="grey", lw=0.5)
    runs = sorted({n for p in pearson.values() for n in p.get("n_runs") or []})
    ax.legend(fontsize=8, title="tGlassMLP, mean +- std over networks" + (
        f"\ndashed: rho_max (label noise, N_R = {'/'.join(map(str, runs))})" if has_ceiling else ""), title_fontsize=8)
    return save(fig, path, dpi)


def chi4_figure(path, md_fields, md_obs, pred, pred_obs, tts, colors, title, pred_only_temperatures=False, dpi=120):
    """Figs. 4 / 6: chi_4(t). MD points, predicted lines (band: std over networks)."""
    fig, ax = plt.subplots(figsize=(8.2, 4.4), constrained_layout=True)
    if pred_only_temperatures:
        md_fields = {t: f for t, f in md_fields.items() if t in pred}
    _time_series(ax, "chi4", md_fields, md_obs, pred, pred_obs, colors)
    temps = sorted(set(md_fields) | set(pred))
    _tau_lines(ax, tts, colors, temps)
    ax.set(xscale="log", xlabel="time t [tau]", ylabel="chi_4(t)  (Eq. 9, type-0 particles)", title=title)
    h1, _ = ax.get_legend_handles_labels()
    _outside_legend(ax, h1 + _legend_note(ax, bool(md_fields), bool(pred)))
    return save(fig, path, dpi)


def xi4_figure(path, md_levels, md_level_obs, md_fields, md_obs, pred, pred_obs, tts, colors, level, oz, dpi=120):
    """Fig. 7: S_4(q) at one <C_B> level with the Ornstein-Zernike fits (left), xi_4(t) (right)."""
    from tglassmlp.observables.four_point import ornstein_zernike

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.6), constrained_layout=True)
    for t in sorted(set(md_levels) | set(pred), reverse=True):
        for src, fields, obs, style in (("MD", md_levels, md_level_obs, "o"), ("tGlassMLP", pred, pred_obs, "s")):
            if t not in fields:
                continue
            hit = np.flatnonzero(np.isclose(fields[t].levels, level))
            if not hit.size:
                continue
            k, o = hit[0], obs[t]
            _errorbar(a1, o["q"], o["s4"][k], o["s4_err"][k], fmt=style, ms=3.5, color=colors[t], capsize=1.5,
                      mfc="none" if src == "tGlassMLP" else None, label=f"{src}, T = {t:g}")
            # the fit over the window it used (self-consistent: q xi_4 <= qxi_max), not up to oz.q_max
            top = o.get("oz_window_q", np.full(len(o["xi4"]), oz.get("q_max", 0.5)))[k]
            if np.isfinite(o["xi4"][k]) and np.isfinite(top) and top > o["q"][0]:
                qq = np.geomspace(o["q"][0], top, 50)
                a1.plot(qq, ornstein_zernike(qq, o["chi4_tilde"][k], o["xi4"][k]), "-" if src == "MD" else ":",
                        color=colors[t], lw=1)
                a1.plot([top], [ornstein_zernike(np.array([top]), o["chi4_tilde"][k], o["xi4"][k])[0]], "|",
                        color=colors[t], ms=10)
    window = (f"q xi_4 <= {oz['qxi_max']:g}, q <= {oz.get('q_max', 0.5):g}" if oz.get("qxi_max") is not None
              else f"q <= {oz.get('q_max', 0.5):g}")
    a1.set(xscale="log", yscale="log", xlabel="q [1/sigma]", ylabel="S_4(q)  (Eq. 10)",
           title=f"S_4 at <C_B> = {level:g}; lines: Eq. (11) fits\nover the windows used ({window})")
    a1.legend(fontsize=7, ncol=2)
    _time_series(a2, "xi4", md_fields, md_obs, pred, pred_obs, colors)
    _tau_lines(a2, tts, colors, sorted(set(md_fields) | set(pred)))
    a2.set(xscale="log", xlabel="time t [tau]", ylabel="xi_4 [sigma]", title="Fig. 7: four-point length xi_4(t)")
    h, _ = a2.get_legend_handles_labels()
    _outside_legend(a2, h + _legend_note(a2, bool(md_fields), bool(pred)))
    return save(fig, path, dpi)


def prefactor_figure(path, md_fields, md_obs, pred, pred_obs, tts, colors, a_range, dpi=120):
    """Fig. 14: the higher-order prefactor A of Eq. (C1) against t."""
    fig, ax = plt.subplots(figsize=(8.2, 4.4), constrained_layout=True)
    _time_series(ax, "A", md_fields, md_obs, pred, pred_obs, colors)
    _tau_lines(ax, tts, colors, sorted(set(md_fields) | set(pred)))
    # a few fits on tiny S_4 (early times, small boxes) have huge bootstrap errors: scale the axis to the values
    vals = np.concatenate([np.ravel(o["A"]) for o in list(md_obs.values()) + list(pred_obs.values())] or [np.zeros(1)])
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo, hi = np.percentile(vals, [2, 98])
        pad = 0.3 * max(hi - lo, 1e-3)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set(xscale="log", xlabel="time t [tau]", ylabel="A  (Eq. C1, dimensionless)",
           title=f"Fig. 14: prefactor A, fit on {a_range[0]:g} < q < {a_range[1]:g} [1/sigma] with xi_4 fixed")
    h, _ = ax.get_legend_handles_labels()
    _outside_legend(ax, h + _legend_note(ax, bool(md_fields), bool(pred)))
    return save(fig, path, dpi)


def chord_figure(path, md_fields, md_obs, pred, pred_obs, tts, colors, level_range, dpi=120):
    """Fig. 8: <xi_chord>(t) for level_range[0] < <C_B> < level_range[1]."""
    fig, ax = plt.subplots(figsize=(8.2, 4.4), constrained_layout=True)
    _time_series(ax, "chord", md_fields, md_obs, pred, pred_obs, colors, level_range=level_range)
    _tau_lines(ax, tts, colors, sorted(set(md_fields) | set(pred)))
    ax.set(xscale="log", xlabel="time t [tau]", ylabel="<xi_chord> [sigma]",
           title=f"Fig. 8: average chord length (median threshold), {level_range[1]:g} > <C_B> > {level_range[0]:g}")
    h, _ = ax.get_legend_handles_labels()
    _outside_legend(ax, h + _legend_note(ax, bool(md_fields), bool(pred)))
    return save(fig, path, dpi)


def attention_figure(path, attention, colors, level, dpi=120):
    """Fig. 9: P_int(L) at one level per temperature (left) and xi_int(T) (right)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 4.2), constrained_layout=True)
    temps, xi, xi_err = [], [], []
    for t in sorted(attention, reverse=True):
        a = attention[t]
        hit = np.flatnonzero(np.isclose(a["levels"], level))
        if not hit.size:
            continue
        k = hit[0]
        a1.errorbar(a["lengths"], a["p_int"][k], yerr=a["p_int_err"][k], fmt="-o", ms=4, capsize=2,
                    color=colors[t], label=f"T = {t:g}")
        temps.append(t)
        xi.append(a["xi_int"][k])
        xi_err.append(a["xi_int_err"][k])
    a1.set(xlabel="coarse-graining length L [sigma]", ylabel="P_int(L)",
           title=f"Fig. 9: attention weight per length, <C_B> = {level:g}")
    a1.legend(fontsize=8, title="mean +- std over networks", title_fontsize=8)
    a2.errorbar(temps, xi, yerr=xi_err, fmt="-o", color="k", capsize=3)
    a2.set(xlabel="temperature T [epsilon/k_B]", ylabel="xi_int = sum_L P_int(L) L [sigma]",
           title="intrinsic length of the attention layer")
    return save(fig, path, dpi)


def _bottleneck_panel(ax, neck, truth, title):
    ok = np.isfinite(truth)
    lo, hi = np.percentile(truth[ok], [2, 98]) if ok.any() else (0, 1)
    order = np.random.default_rng(0).permutation(int(ok.sum()))  # random drawing order: no colour hides another
    sc = ax.scatter(neck[ok, 0][order], neck[ok, 1][order], c=truth[ok][order], s=4, cmap=PROPENSITY_CMAP,
                    vmin=lo, vmax=hi, rasterized=True)
    ax.set(title=title, xlabel="bottleneck node 1", ylabel="bottleneck node 2")
    return sc


def bottleneck_figure(path, internals, temperature_levels: Sequence[tuple[float, float]], levels, title, dpi=120):
    """Figs. 10 / 11: particles in the bottleneck plane (first network), coloured by the MD propensity."""
    panels = []
    for t, c in temperature_levels:
        item = internals.get(t)
        if item is None:
            continue
        k = int(np.flatnonzero(np.isclose(levels, c))[0])
        necks = [b[0, k] for b, tr in zip(item["bottleneck"], item["truth"]) if tr is not None and np.isfinite(tr[k]).all()]
        truths = [tr[k] for tr in item["truth"] if tr is not None and np.isfinite(tr[k]).all()]
        if necks:
            panels.append((t, c, np.concatenate(necks), np.concatenate(truths)))
    if not panels:
        return None
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.9 * ncol, 3.5 * nrow), constrained_layout=True, squeeze=False)
    for ax, (t, c, neck, truth) in zip(axes.flat, panels):
        sc = _bottleneck_panel(ax, neck, truth, f"T = {t:g}, <C_B> = {c:g} ({truth.size} particles)")
        fig.colorbar(sc, ax=ax, label="MD propensity C_B^i", shrink=0.8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(title)
    return save(fig, path, dpi)


def _marker_size(ax_inches: float, box: float, diameter: float = 1.0) -> float:
    """scatter size [pt^2] of a disc of ``diameter`` sigma in an axis ``ax_inches`` wide showing ``box`` sigma."""
    return (72.0 * ax_inches * diameter / box) ** 2


def snapshot_figure(path, panels, box, title, dpi=120):
    """Propensity maps (Figs. 3, 5): panels = [(title, positions (N, 2), values (N,), colour label, vmin, vmax)]."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.9 * n, 4.1), constrained_layout=True, squeeze=False)
    for ax, (ttl, pos, vals, clabel, lo, hi, cmap) in zip(axes[0], panels):
        p = np.mod(pos, box)
        sc = ax.scatter(p[:, 0], p[:, 1], c=vals, s=_marker_size(2.9, box, 1.0), cmap=cmap, vmin=lo, vmax=hi,
                        linewidths=0)
        ax.set(xlim=(0, box), ylim=(0, box), aspect="equal", title=ttl, xlabel="x [sigma]", ylabel="y [sigma]")
        fig.colorbar(sc, ax=ax, label=clabel, shrink=0.8)
    fig.suptitle(title)
    return save(fig, path, dpi)


def length_scale_figure(path, md_levels, md_level_obs, pred, pred_obs, attention, level, dpi=120):
    """Fig. 12: xi_4, <xi_chord> * CHORD_FACTOR and xi_int * XI_INT_FACTOR against T at one level."""
    fig, ax = plt.subplots(figsize=(8.4, 4.4), constrained_layout=True)

    def series(fields, obs, key, factor=1.0):
        ts, ys, es = [], [], []
        for t in sorted(fields):
            hit = np.flatnonzero(np.isclose(fields[t].levels, level))
            if hit.size and np.isfinite(obs[t][key][hit[0]]):
                ts.append(t)
                ys.append(factor * obs[t][key][hit[0]])
                es.append(factor * np.nan_to_num(obs[t][key + "_err"][hit[0]]))
        return ts, ys, es

    for key, factor, label, color in (("xi4", 1.0, "xi_4", "C0"), ("chord", CHORD_FACTOR, f"{CHORD_FACTOR:g} <xi_chord>", "C1")):
        ts, ys, es = series(md_levels, md_level_obs, key, factor)
        if ts:
            ax.errorbar(ts, ys, yerr=es, fmt="o", color=color, capsize=3, label=f"{label}, MD")
        ts, ys, es = series(pred, pred_obs, key, factor)
        if ts:
            ax.errorbar(ts, ys, yerr=es, fmt="--s", mfc="none", color=color, capsize=3, label=f"{label}, tGlassMLP")
    ts, ys, es = [], [], []
    for t in sorted(attention):
        a = attention[t]
        hit = np.flatnonzero(np.isclose(a["levels"], level))
        if hit.size:
            ts.append(t)
            ys.append(XI_INT_FACTOR * a["xi_int"][hit[0]])
            es.append(XI_INT_FACTOR * a["xi_int_err"][hit[0]])
    if ts:
        ax.errorbar(ts, ys, yerr=es, fmt="-^", color="C2", capsize=3, label=f"{XI_INT_FACTOR:g} xi_int, attention")
    ax.set(xlabel="temperature T [epsilon/k_B]", ylabel="length [sigma]",
           title=f"Fig. 12: dynamic length scales at <C_B> = {level:g}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save(fig, path, dpi)


def master_curve_figure(data_root, path, labels_dir) -> Path:
    """Fig. 13: reuses ``analysis.labels_report.label_report`` (which also writes its report to labels_dir)."""
    from tglassmlp.analysis.labels_report import label_report

    label_report(data_root, labels_dir)
    path = Path(path)
    with atomic_path(path) as tmp:
        shutil.copyfile(Path(labels_dir) / "master_curve.png", tmp)
    return path


# ------------------------------------------------------------------------------------------------ all
def _first_test_structure(field, level_index=None):
    """Index of the first held-out structure (else the first), preferring structures with MD truth at
    ``level_index`` when it is given (a snapshot against an empty MD panel says nothing)."""
    def has_truth(s):
        return level_index is None or (s.truth is not None and np.all(np.isfinite(s.truth[level_index])))

    for wanted in ((lambda s: not s.trained and has_truth(s)), has_truth, (lambda s: True)):
        for j, s in enumerate(field.structures):
            if wanted(s):
                return j
    return 0


def make_all(fig_dir, *, md, md_time, md_levels, md_level_obs, pred, pred_obs, pearson, attention, internals, tts,
             levels, ref_level, dpi=120, chord_range=(0.3, 0.95), oz: Mapping | None = None) -> list[Path]:
    """Every figure the given results support; returns the paths written."""
    fig_dir = Path(fig_dir)
    oz = dict(oz or {})
    colors = temperature_colors(list(md) + list(pred))
    made = []
    if pearson and any(np.any(np.isfinite(p["test"])) for p in pearson.values()):
        made.append(pearson_figure(fig_dir / "fig02_pearson.png", pred, pearson, tts, colors, dpi))
    md_pred_t = {t: f for t, f in pred.items() if t in md}
    made.append(chi4_figure(fig_dir / "fig04_chi4.png", md, md_time, md_pred_t, pred_obs, tts, colors,
                            "Fig. 4: chi_4(t), MD and tGlassMLP at the MD temperatures" if pred else
                            "Fig. 4: chi_4(t) from MD", dpi=dpi))
    if pred:
        made.append(chi4_figure(fig_dir / "fig06_chi4_predicted.png", md, md_time, pred, pred_obs, tts, colors,
                                "Fig. 6: chi_4(t) predicted at every temperature (points: MD)", dpi=dpi))
    made.append(xi4_figure(fig_dir / "fig07_xi4.png", md_levels, md_level_obs, md, md_time, pred, pred_obs, tts,
                           colors, 0.5 if 0.5 in levels else ref_level, oz, dpi))
    made.append(prefactor_figure(fig_dir / "fig14_prefactor_A.png", md, md_time, pred, pred_obs, tts, colors,
                                 oz.get("a_range", (0.2, 0.6)), dpi))
    made.append(chord_figure(fig_dir / "fig08_chords.png", md, md_time, pred, pred_obs, tts, colors, chord_range, dpi))
    if attention:
        made.append(attention_figure(fig_dir / "fig09_attention.png", attention, colors, ref_level, dpi))
    made.append(length_scale_figure(fig_dir / "fig12_length_scales.png", md_levels, md_level_obs, pred, pred_obs,
                                    attention, ref_level, dpi))
    if internals:
        with_truth = sorted(t for t in internals if t in md_levels)
        if with_truth:
            # Fig. 10: the lowest MD temperature that reaches most levels, every level it reaches
            t10 = min(with_truth, key=lambda t: (-md_levels[t].levels.size, t))
            lv = [c for c in levels if np.any(np.isclose(md_levels[t10].levels, c))]
            p = bottleneck_figure(fig_dir / "fig10_bottleneck_levels.png", internals, [(t10, c) for c in lv], levels,
                                  f"Fig. 10: bottleneck layer at T = {t10:g} (first network), coloured by MD propensity",
                                  dpi)
            made += [p] if p else []
            p = bottleneck_figure(fig_dir / "fig11_bottleneck_temperatures.png", internals,
                                  [(t, ref_level) for t in sorted(with_truth, reverse=True)], levels,
                                  f"Fig. 11: bottleneck layer at <C_B> = {ref_level:g} (first network)", dpi)
            made += [p] if p else []
    # Fig. 3: MD against prediction at the lowest MD temperature with predictions, at the reference level
    # temperatures whose MD reaches the level and whose predictions include it
    both = sorted(t for t in md_pred_t if md_levels.get(t) is not None
                  and np.any(np.isclose(md_levels[t].levels, ref_level))
                  and np.any(np.isclose(pred[t].levels, ref_level))) if md_levels else []
    if both:
        t3 = both[0]
        f = pred[t3]
        k = int(np.flatnonzero(np.isclose(f.levels, ref_level))[0])
        s = f.structures[_first_test_structure(f, k)]
        truth = s.truth[k]
        lo, hi = np.percentile(np.concatenate([truth, s.values[k]]), [2, 98])
        panels = [("MD (isoconfigurational average)", s.positions, truth, "propensity C_B^i", lo, hi, PROPENSITY_CMAP),
                  ("tGlassMLP (mean over networks)", s.positions, s.values[k], "propensity X_MLP^i", lo, hi,
                   PROPENSITY_CMAP)]
        if s.spread is not None:
            panels.append(("spread over networks", s.positions, s.spread[k], "std of X_MLP^i", 0,
                           float(np.percentile(s.spread[k], 98)), "viridis"))
        made.append(snapshot_figure(fig_dir / "fig03_snapshots.png", panels, s.box,
                                    f"Fig. 3: T = {t3:g}, <C_B> = {ref_level:g}, {Path(s.name).parent.name}/"
                                    f"{Path(s.name).name}{' (test structure)' if not s.trained else ''}; type-0 particles",
                                    dpi))
    elif md_levels:
        t3 = min(md_levels)
        f = md_levels[t3]
        k = int(np.argmin(np.abs(f.levels - ref_level)))
        s = f.structures[0]
        lo, hi = np.percentile(s.values[k], [2, 98])
        made.append(snapshot_figure(fig_dir / "fig03_snapshots.png",
                                    [("MD", s.positions, s.values[k], "propensity C_B^i", lo, hi, PROPENSITY_CMAP)],
                                    s.box, f"Fig. 3 (MD only): T = {t3:g}, <C_B> = {f.levels[k]:.2f}", dpi))
    # Fig. 5: predicted time evolution at the lowest temperature (MD where there is no prediction)
    src = pred if pred else md_levels
    if src:
        t5 = min(src)
        f = src[t5]
        s = f.structures[0]
        # four levels spread over those at or below 0.9 (the paper's Fig. 5 spans the alpha relaxation)
        below = [k for k in range(f.levels.size) if f.levels[k] <= 0.9 + 1e-9] or list(range(f.levels.size))
        ks = sorted({below[int(round(i))] for i in np.linspace(0, len(below) - 1, min(4, len(below)))})
        panels = []
        for k in ks:
            t_txt = f", t = {f.times[k]:.3g} tau" if np.isfinite(f.times[k]) else ""
            panels.append((f"<C_B> = {f.levels[k]:g}{t_txt}", s.positions, s.values[k], "propensity", 0.0, 1.0,
                           PROPENSITY_CMAP))
        made.append(snapshot_figure(fig_dir / "fig05_snapshots_time.png", panels, s.box,
                                    f"Fig. 5: relaxation at T = {t5:g} ({f.source}), type-0 particles", dpi))
    return made
