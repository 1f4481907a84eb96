"""REPORT_DIR: metrics.json for machines, report.md with tables and PNG plots for people.

Every figure is drawn from the report dict that `recsys.jobs.evaluate.evaluate` builds (and writes as
metrics.json), so the plots, the tables and the JSON can never disagree.
"""

from __future__ import annotations

import math
from pathlib import Path

from recsys.contracts.files import atomic_dir, atomic_path, write_json

PLOTS_DIR = "plots"
# one colour per system, the same in every figure
COLORS = {
    "text model + ranker": "#1f5fa8",
    "text model alone": "#7fb2e5",
    "ranker without text": "#e08a2c",
    "co-visitation": "#4a9e5c",
    "popularity": "#8c8c8c",
    "oracle": "#2b2b2b",
}
TABLE_METRICS = (
    ("ndcg@10", "NDCG@10"),
    ("ndcg@20", "NDCG@20"),
    ("recall@10", "Recall@10"),
    ("recall@20", "Recall@20"),
    ("mrr@10", "MRR@10"),
    ("hit@10", "HitRate@10"),
    ("auc_p_click", "AUC p_click"),
    ("auc_p_purchase", "AUC p_purchase"),
    ("coverage@20", "coverage@20"),
    ("fresh_share@10", "share of top 10 created in the last week"),
    ("oracle_share@10", "share of oracle NDCG@10"),
    ("ev@10", "expected value@10"),
    ("ev_share@10", "share of oracle EV@10"),
)


def write_report(out_dir: str | Path, report: dict) -> dict[str, str]:
    """Write plots/, metrics.json and report.md (each atomically, report.md last); returns the plot files."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir / PLOTS_DIR) as tmp:
        plots = {name: f"{PLOTS_DIR}/{path.name}" for name, path in draw_plots(report, tmp).items()}
    report["plots"] = plots
    write_json(out_dir / "metrics.json", strict_json(report))
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text(render_markdown(report), encoding="utf-8")
    return plots


def _paired_cell(cell: dict | None) -> str:
    if not cell or not _finite(cell.get("mean")):
        return "–"
    low, high = cell["ci95"]
    return f"{cell['mean']:+.4f} ± {cell['se']:.4f} [{low:+.4f}, {high:+.4f}]"


def strict_json(value):
    """NaN and ±inf (a metric that does not apply, a ratio to zero) as null: metrics.json stays valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- markdown


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ")


def _pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_markdown(report: dict) -> str:
    """report.md: protocol, systems, targets, slices, calibration, ablations, cross-domain, training, timings."""
    systems = report["systems"]
    columns = [(key, label) for key, label in TABLE_METRICS if any(_num(m.get(key)) != "–" for m in systems.values())]
    plots = report.get("plots", {})
    d = report.get("diagnostics", {})
    lines = [
        "# recsys evaluation",
        "",
        f"Trained on every event before **{_when(report['cutoff'])}** (UTC), tested on the next {report['test_days']:g} days "
        f"(until {_when(report['end'])}): **{report['queries']} query users** (each user with a click or purchase in the "
        f"test period on an item they had not engaged with before), {report['relevant_pairs']} relevant (user, item) pairs "
        f"(purchase = 2, click = 1), ranked against the {report['items_at_cutoff']} items in the catalog at the cutoff "
        f"(of {report['catalog_items']}) minus each user's already clicked or bought items.",
        "",
        f"Model {report['model_version']} ({report['config']}; {report['precision']} on {', '.join(report['providers'])}). "
        f"{_pct(d.get('reachable_share'))} of the relevant pairs are items that existed at the cutoff (the rest were created "
        f"later and no system can recommend them); the candidate generator holds {_pct(d.get('candidate_recall'))} of them"
        + (
            f", and the oracle reranking only those candidates reaches NDCG@10 {_num(d['oracle_on_candidates_ndcg@10'])}"
            + (f" and expected value@10 {_num(d['oracle_on_candidates_ev@10'])}" if _finite(d.get("oracle_on_candidates_ev@10")) else "")
            + " (what perfect knowledge makes of them)."
            if _finite(d.get("oracle_on_candidates_ndcg@10"))
            else "."
        ),
        "",
        *(
            [
                "Candidate sources, share of the relevant pairs each lists (and lists alone): "
                + ", ".join(f"{name.removeprefix('cand_')} {r['recall']:.1%} ({r['only']:.1%})" for name, r in d["source_recall"].items())
                + ".",
                "",
            ]
            if d.get("source_recall")
            else []
        ),
        "## Systems",
        "",
        "All systems answer the same queries with the same exclusions; the learned ones rank the same candidates "
        f"(~{d.get('candidates_per_user', '?')} per user, from every candidate source of the shipped system).",
        "",
        "- **text model + ranker**: the shipped system, scored through `serving.score.recommend` from the ONNX export;",
        "- **text model alone**: the candidates ranked by the text model's p_click;",
        "- **ranker without text**: LambdaRank on the same training rows without p_click, p_purchase, similarity, the text-retrieval rank and the source count;",
        "- **without text anywhere**: the same text-free ranker, trained and applied only on the candidates a source other than text retrieval found (co-visitation, popular, newest);",
        "- **co-visitation**: items co-clicked with the user's recent clicks (summed cosine weights), popularity fills empty slots;",
        "- **popularity**: most clicked items of the last days before the cutoff;",
    ]
    if "oracle" in systems:
        lines.append(
            "- **oracle**: the generator's true probabilities (expected gain p_click + 2·p_purchase at the middle of the test period); the best a ranking can expect, not a bound on the logged metrics."
        )
    lines += [
        "",
        *_table(
            ["system", *[label for _, label in columns]],
            [
                [name, *[(_pct if key in ("oracle_share@10", "ev_share@10") else _num)(m.get(key)) for key, _ in columns]]
                for name, m in systems.items()
            ],
        ),
    ]
    lines += [
        "",
        "AUCs are on the test period's impressions (p_click vs clicked, p_purchase vs bought); the ranker's score is not a probability, so only the text model, popularity (its click count) and the oracle (the true probabilities) have them.",
        "",
    ]
    if "systems" in plots:
        lines += [f"![metrics per system]({plots['systems']})", ""]

    paired = report.get("paired") or {}
    if paired:
        lines += [
            "## Paired differences",
            "",
            f"The full system minus each other system, per query user ({report.get('queries')} users, the same for every system): "
            "mean ± standard error and a 95% bootstrap interval. An interval that holds 0 is within noise. "
            + (
                "EV@10 scores each list by the generator's true probabilities (an expectation, no draw of clicks). "
                if "ev@10" in paired
                else ""
            )
            + "Between runs (seeds, data) the spread is larger: `benchmarks/paired.py` pools runs.",
            "",
        ]
        metrics = list(paired)
        names = list(next(iter(paired.values())))
        lines += _table(
            ["full system − …", *[f"{m} (± se) [95%]" for m in metrics]],
            [[name, *[_paired_cell(paired[m].get(name)) for m in metrics]] for name in names],
        )
        lines.append("")

    if report.get("targets"):
        lines += ["## Targets", ""]
        lines += _table(
            ["target", "measured", "threshold", "met"],
            [[t["target"], _num(t["value"], 3), _num(t["threshold"], 2), "yes" if t["met"] else "**no**"] for t in report["targets"]],
        )
        lines.append("")

    slices = report.get("slices", {})
    if slices:
        names = list(systems)
        lines += [
            "## Slices",
            "",
            "NDCG@10 per slice. Slices are defined from pre-cutoff data only. An item slice keeps each system's full top-K and counts only hits on the slice's items; a user slice keeps its users' queries.",
            "",
        ]
        rows = [
            [f"{name} ({s['queries']})", *[_num(s["systems"][n]["ndcg@10"]) for n in names]]
            for name, s in slices.items()
            if not name.startswith("category: ") and s["queries"]
        ]
        lines += _table(["slice (queries)", *names], rows)
        lines.append("")
        for key in ("slices", "categories"):
            if key in plots:
                lines += [f"![NDCG@10 per {key}]({plots[key]})", ""]
        categories = [(name, s) for name, s in slices.items() if name.startswith("category: ") and s["queries"]]
        if categories:
            lines += ["<details><summary>per category</summary>", ""]
            lines += _table(
                ["category (queries)", *names],
                [
                    [f"{name.removeprefix('category: ')} ({s['queries']})", *[_num(s["systems"][n]["ndcg@10"]) for n in names]]
                    for name, s in categories
                ],
            )
            lines += ["", "</details>", ""]

    cal = report.get("calibration")
    if cal:
        lines += [
            "## Calibration",
            "",
            "Predicted vs observed rate on the test impressions, in equal-count bins. p_click is P(click | shown at the top slot), so the top slot is where it should match; at lower slots the position bias makes the observed rate lower.",
            "",
        ]
        rows = []
        for where, parts in cal.items():
            for target, r in parts.items():
                rows.append([f"{target}, {where}", str(r["count"]), _num(r["mean_predicted"]), _num(r["observed_rate"]), _num(r["ece"])])
        lines += _table(["score, exposures", "n", "mean predicted", "observed", "ECE"], rows)
        lines.append("")
        if "calibration" in plots:
            lines += [f"![calibration]({plots['calibration']})", ""]

    ab = report.get("ablations")
    if ab:
        lines += ["## Ablations", "", "Each row retrains both stages with one option flipped and goes through the same protocol.", ""]
        lines += _table(
            ["variant", "changes", "NDCG@10", "Recall@20", "MRR@10", "AUC p_click", "AUC p_purchase", "train s"],
            [
                [
                    name,
                    r["changes"],
                    _num(r["ndcg@10"]),
                    _num(r["recall@20"]),
                    _num(r["mrr@10"]),
                    _num(r["auc_p_click"]),
                    _num(r["auc_p_purchase"]),
                    _num(r.get("timings_s", {}).get("train_s", report["timings_s"].get("train_s")), 0),
                ]
                for name, r in ab.items()
            ],
        )
        lines.append("")
        if "ablations" in plots:
            lines += [f"![ablations]({plots['ablations']})", ""]

    cross = report.get("cross_domain")
    if cross:
        lines += [
            "## Cross-domain transfer",
            "",
            f"Domain **{cross['domain']}** held out entirely from training (no event of its {cross['items']} items); its "
            f"{cross['queries']} test users' clicks on it are ranked among its items only. The zero-shot systems know those "
            "items only from their text; popularity within the domain uses the domain's real pre-cutoff events, and so "
            "does the transfer row: the same model, not retrained, with those events in its histories and features.",
            "",
        ]
        with_ev = all("ev@10" in m for m in cross["systems"].values())
        lines += _table(
            [
                "system",
                *(["EV@10", "share of the oracle's EV"] if with_ev else []),
                "NDCG@10",
                "NDCG@20",
                "Recall@20",
                "MRR@10",
                "HitRate@10",
            ],
            [
                [
                    n,
                    *([_num(m["ev@10"]), _num(m.get("ev_share@10"))] if with_ev else []),
                    _num(m["ndcg@10"]),
                    _num(m["ndcg@20"]),
                    _num(m["recall@20"]),
                    _num(m["mrr@10"]),
                    _num(m["hit@10"]),
                ]
                for n, m in cross["systems"].items()
            ],
        )
        lines.append("")
        for metric, rows in (cross.get("paired") or {}).items():
            for name, d in rows.items():
                lines.append(
                    f"- {name}, {metric} per test user: {d['mean']:+.4f} ± {d['se']:.4f} (95% bootstrap {d['ci95'][0]:+.4f} to {d['ci95'][1]:+.4f}, {d['n']} users)"
                )
        if cross.get("paired"):
            lines.append("")

    training = report.get("training") or {}
    if training.get("text_model") or training.get("ranker"):
        lines += ["## Training", ""]
        ranker = training.get("ranker") or {}
        if ranker:
            lines.append(
                f"Ranker: {ranker.get('best_iteration')} trees (chosen by {ranker.get('cv_folds')}-fold cross-validation over the ranker window's {ranker.get('users')} users), cross-validated NDCG@10 {_num(ranker.get('valid_ndcg@10'))}."
            )
        importance = training.get("ranker_feature_importance") or {}
        if importance:
            total = sum(importance.values()) or 1.0
            lines.append("Top ranker features by gain: " + ", ".join(f"{k} {v / total:.0%}" for k, v in list(importance.items())[:8]) + ".")
        lines.append("")
        if "training" in plots:
            lines += [f"![training curves]({plots['training']})", ""]

    lines += ["## Run time", ""]
    lines += _table(["stage", "seconds"], [[k.removesuffix("_s"), _num(v, 1)] for k, v in report["timings_s"].items()])
    lines += ["", "Everything above is in `metrics.json`; the models, exports and test recommendations are under `artifacts/`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- plots


def draw_plots(report: dict, folder: Path) -> dict[str, Path]:
    """Every figure the report has data for; returns name → file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.spines.top": False, "axes.spines.right": False})
    drawn = {}
    for name, draw in (
        ("systems", _plot_systems),
        ("slices", _plot_slices),
        ("categories", _plot_categories),
        ("calibration", _plot_calibration),
        ("training", _plot_training),
        ("ablations", _plot_ablations),
    ):
        fig = draw(report, plt)
        if fig is None:
            continue
        path = folder / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        drawn[name] = path
    return drawn


def _color(name: str) -> str:
    for key, color in COLORS.items():
        if name.startswith(key):
            return color
    return "#b07aa1"


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and (math.isnan(value) or math.isinf(value)))


def _plot_systems(report: dict, plt):
    systems = report["systems"]
    metrics = [
        (k, label)
        for k, label in (
            ("ndcg@10", "NDCG@10"),
            ("ndcg@20", "NDCG@20"),
            ("recall@20", "Recall@20"),
            ("mrr@10", "MRR@10"),
            ("hit@10", "HitRate@10"),
            ("coverage@20", "Catalog coverage@20"),
        )
        if any(_finite(m.get(k)) for m in systems.values())
    ]
    names = list(systems)[::-1]  # first system on top
    cols = 3
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 1.0 + rows * (0.45 * len(names) + 0.9)), squeeze=False)
    for ax, (key, label) in zip(axes.ravel(), metrics):
        values = [systems[n].get(key) if _finite(systems[n].get(key)) else 0.0 for n in names]
        bars = ax.barh(names, values, color=[_color(n) for n in names])
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=9)
        ax.set_title(label)
        ax.set_xlim(0, max(values + [1e-9]) * 1.3)
        ax.set_xlabel(label)
        ax.tick_params(axis="y", labelsize=9)
    for ax in axes.ravel()[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"Test period: {report['test_days']:g} days after {_when(report['cutoff'])}, {report['queries']} query users (higher is better)",
        y=1.0,
    )
    fig.tight_layout()
    return fig


def _heatmap(plt, rows: list[str], names: list[str], values, title: str, xlabel: str):
    import numpy as np

    data = np.array([[v if _finite(v) else np.nan for v in row] for row in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.35 * len(names), 0.9 + 0.38 * len(rows)))
    image = ax.imshow(
        np.nan_to_num(data, nan=0.0), cmap="Blues", aspect="auto", vmin=0, vmax=max(np.nanmax(data) if np.isfinite(data).any() else 1, 1e-9)
    )
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    top = np.nanmax(data) if np.isfinite(data).any() else 1
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            text = "–" if np.isnan(data[i, j]) else f"{data[i, j]:.3f}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if np.isfinite(data[i, j]) and data[i, j] > 0.6 * top else "black",
            )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="NDCG@10")
    fig.tight_layout()
    return fig


def _plot_slices(report: dict, plt):
    slices = {n: s for n, s in report.get("slices", {}).items() if not n.startswith("category: ") and s["queries"]}
    if not slices:
        return None
    names = list(report["systems"])
    rows = [f"{n} ({s['queries']} users)" for n, s in slices.items()]
    values = [[s["systems"][n]["ndcg@10"] for n in names] for s in slices.values()]
    return _heatmap(plt, rows, names, values, "NDCG@10 per slice (darker is better)", "system")


def _plot_categories(report: dict, plt):
    slices = {n.removeprefix("category: "): s for n, s in report.get("slices", {}).items() if n.startswith("category: ") and s["queries"]}
    if not slices:
        return None
    names = list(report["systems"])
    rows = [f"{n} ({s['queries']})" for n, s in slices.items()]
    values = [[s["systems"][n]["ndcg@10"] for n in names] for s in slices.values()]
    return _heatmap(plt, rows, names, values, "NDCG@10 per category (query users in brackets)", "system")


def _plot_calibration(report: dict, plt):
    cal = report.get("calibration")
    if not cal:
        return None
    targets = [("p_click", "clicked"), ("p_purchase", "bought")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    styles = {"top position": ("o-", "#1f5fa8"), "all positions": ("s--", "#e08a2c")}
    for ax, (target, outcome) in zip(axes, targets):
        top = 0.0
        for where, parts in cal.items():
            rows = parts[target]["bins"]
            if not rows:
                continue
            x = [r["mean_predicted"] for r in rows]
            y = [r["observed_rate"] for r in rows]
            style, color = styles.get(where, ("o-", "#555555"))
            ax.plot(x, y, style, color=color, label=f"{where} (n={parts[target]['count']}, ECE {parts[target]['ece']:.3f})")
            top = max(top, *x, *y)
        top = top * 1.08 or 1.0
        ax.plot([0, top], [0, top], ":", color="#777777", label="perfect calibration")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel(f"mean predicted {target} (equal-count bins)")
        ax.set_ylabel(f"observed share {outcome}")
        ax.set_title(f"{target} on test impressions")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def _plot_training(report: dict, plt):
    from matplotlib.ticker import MaxNLocator

    training = report.get("training") or {}
    curves = training.get("text_model") or {}
    ranker = training.get("ranker") or {}
    panels = []
    if curves.get("epoch"):
        panels += ["loss", "auc"]
    if ranker.get("valid_ndcg@10_curve"):
        panels.append("ranker")
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    axes = list(axes.ravel())
    if curves.get("epoch"):
        epochs = curves["epoch"]
        fine = [e for e, p in zip(epochs, curves["phase"]) if p == "fine-tune"]
        for ax in axes[:2]:
            if fine:
                ax.axvspan(min(fine) - 0.5, max(fine) + 0.5, color="#f2e6d0", label="encoder fine-tuning")
        axes[0].plot(epochs, curves["train_loss"], "o-", color="#1f5fa8", label="training loss")
        axes[0].set_xlabel("epoch")
        axes[0].set_ylabel("multi-task loss")
        axes[0].set_title("Text model: training loss")
        axes[0].legend(fontsize=8)
        axes[1].plot(epochs, curves["valid_click_auc"], "o-", color="#1f5fa8", label="click AUC")
        axes[1].plot(epochs, curves["valid_purchase_auc"], "s-", color="#4a9e5c", label="purchase AUC")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("AUC on the newest 10% of exposures")
        axes[1].set_title("Text model: validation AUC")
        axes[1].legend(fontsize=8)
        for ax in axes[:2]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ranker.get("valid_ndcg@10_curve"):
        ax = axes[-1]
        curve = ranker["valid_ndcg@10_curve"]
        ax.plot(range(1, len(curve) + 1), curve, "-", color="#e08a2c", label="cross-validated NDCG@10 (mean of folds)")
        best = ranker.get("best_iteration")
        if best:
            ax.axvline(best, color="#555555", linestyle=":", label=f"kept: {best} trees")
        ax.set_xlabel("boosting round (trees)")
        ax.set_ylabel("NDCG@10 of held-out users")
        ax.set_title("Ranker: LambdaRank validation")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot_ablations(report: dict, plt):
    ab = report.get("ablations")
    cross = report.get("cross_domain")
    if not ab and not cross:
        return None
    panels = []
    if ab:
        panels += [("ndcg@10", "NDCG@10"), ("auc_p_purchase", "AUC p_purchase")]
    fig, axes = plt.subplots(1, len(panels) + (1 if cross else 0), figsize=(5.2 * (len(panels) + (1 if cross else 0)), 3.6), squeeze=False)
    axes = list(axes.ravel())
    for ax, (key, label) in zip(axes, panels):
        names = list(ab)[::-1]
        values = [ab[n][key] if _finite(ab[n][key]) else 0.0 for n in names]
        auc_panel = key.startswith("auc")
        left = 0.5 if auc_panel else 0.0  # an AUC of 0.5 is chance: bars start there
        bars = ax.barh(
            names, [v - left for v in values], left=left, color=["#1f5fa8" if n == "as configured" else "#9bbbe0" for n in names]
        )
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=9)
        ax.set_xlim(left, left + (max(values + [left + 1e-9]) - left) * 1.25)
        ax.set_xlabel(f"{label} (0.5 = chance)" if auc_panel else label)
        ax.set_title(f"Ablations: {label}")
    if cross:
        ax = axes[-1]
        names = list(cross["systems"])[::-1]
        values = [cross["systems"][n]["ndcg@10"] for n in names]
        bars = ax.barh(names, values, color=[_color(n) for n in names])
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=9)
        ax.set_xlim(0, max(values + [1e-9]) * 1.3)
        ax.set_xlabel("NDCG@10 within the domain")
        ax.set_title(f"Held-out domain: {cross['domain']} ({cross['queries']} users)")
    fig.tight_layout()
    return fig
