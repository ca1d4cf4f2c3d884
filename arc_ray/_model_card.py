"""The model card of an export: ``model_card.md``, ``model_card.html``, ``roc.png``, ``calibration.png``.

Written by :func:`arc_ray.export.export_model` from what it measured; kept apart so the
export's logic (choosing, scoring, writing atomically) reads without the page layout.
The HTML page embeds its figures as base64 PNG, so it can be mailed or opened offline;
the Markdown card links the PNG files beside it. Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from arc_ray.export import SplitScores

_COLOURS = {"validation": "#4C72B0", "test": "#C44E52"}
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:980px;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:14px;margin:.5em 0} th,td{border:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums} img{max-width:48%;margin:.5em 1% .5em 0}
.muted{color:#777} .warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em}
"""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_roc(splits: list["SplitScores"], threshold: float, path: Path) -> Path:
    """ROC curves of the splits, each with its operating point at ``threshold``."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for s in splits:
        fpr, tpr, _ = roc_curve(s.labels, s.probs)
        colour = _COLOURS.get(s.name, "#555")
        ax.plot(fpr, tpr, color=colour, label=f"{s.name} (AUC {s.metrics['auc']:.3f})")
        ax.plot(1 - s.metrics["specificity"], s.metrics["sensitivity"], "o", color=colour, markersize=8)
    ax.plot([0, 1], [0, 1], ls=":", color="#999")
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           title=f"ROC; dots: threshold {threshold:.3f}", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_calibration(splits: list["SplitScores"], path: Path, bins: int = 10) -> Path:
    """Reliability diagram: observed frequency of the positive class against predicted probability.

    Bins hold equal numbers of cases (quantiles), so a model whose probabilities bunch up
    in a narrow band still shows a curve rather than one point.
    """
    from sklearn.calibration import calibration_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls=":", color="#999", label="perfectly calibrated")
    for s in splits:
        observed, predicted = calibration_curve(s.labels, np.clip(s.probs, 0, 1), n_bins=bins, strategy="quantile")
        ax.plot(predicted, observed, "o-", color=_COLOURS.get(s.name, "#555"),
                label=f"{s.name} (Brier {s.metrics['brier']:.3f})")
    ax.set(xlabel="predicted probability", ylabel="observed fraction positive", xlim=(0, 1), ylim=(0, 1),
           title=f"Calibration (up to {bins} equal-count bins)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- content
def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _with_ci(s: "SplitScores", key: str) -> str:
    low, high = s.intervals.get(key, (math.nan, math.nan))
    return f"{_f(s.metrics[key])} ({_f(low)} to {_f(high)})"


def _sections(info: dict[str, Any], val: "SplitScores", test: "SplitScores | None") -> list[tuple[str, Any]]:
    """The card as (heading, content) pairs; content is text, a table (header, rows) or a figure name."""
    splits = [s for s in (val, test) if s is not None]
    lin = info.get("lineage") or {}
    counts = info["splits"]
    data_rows = []
    for name in ("train", "validation", "test"):
        c = counts.get(name)
        if c:
            data_rows.append([name, c["n"], c["positive"], c["negative"], f"{100 * c['positive'] / c['n']:.1f} %"])
    data_note = (f"Data: {info['data_source']}; {info['skipped_images']} unreadable image(s) skipped. "
                 f"The positive class is '{info['positive_class']}'. "
                 + ("The test split was held out from training and from every selection (trials, best epoch, "
                    "threshold) and is scored only here, once." if test is not None else "There is no test split."))
    no_test = None
    if test is None:
        no_test = ("This data set has no test split, so every number below is measured on the validation split, "
                   "which also chose the best trial, its best epoch and the threshold: expect the model to do "
                   "worse on new data. Hold out a test split (test_split, a test/ folder, or split=test rows in "
                   "a manifest) for an honest estimate.")
    rows = [["AUC (95 % CI)", *[_with_ci(s, "auc") for s in splits]],
            ["sensitivity at the threshold (95 % CI)", *[_with_ci(s, "sensitivity") for s in splits]],
            ["specificity at the threshold (95 % CI)", *[_with_ci(s, "specificity") for s in splits]],
            ["Brier score (95 % CI)", *[_with_ci(s, "brier") for s in splits]],
            ["sensitivity at 90 % specificity", *[_f(s.metrics["sens_at_spec90"]) for s in splits]],
            ["sensitivity at 95 % specificity", *[_f(s.metrics["sens_at_spec95"]) for s in splits]],
            ["specificity at 90 % sensitivity", *[_f(s.metrics["spec_at_sens90"]) for s in splits]],
            ["specificity at 95 % sensitivity", *[_f(s.metrics["spec_at_sens95"]) for s in splits]]]
    confusion_rows = []
    for s in splits:
        c = s.confusion
        confusion_rows += [[s.name, "actually positive", c["tp"], c["fn"]],
                           [s.name, "actually negative", c["fp"], c["tn"]]]
    cfg = info.get("config") or {}
    model_rows = [["timm model", info["model"]], ["image size", f"{info['image_size']} px"],
                  ["normalisation mean / std", f"{info['mean']} / {info['std']}"],
                  ["best epoch", f"{info['best_epoch']} of {cfg.get('epochs', '?')} (by validation "
                                 f"{info['select_metric']})"],
                  ["threshold", f"{info['threshold']:.4f}: {info['threshold_rule']}"],
                  ["preprocessing", info["preprocessing"]]]
    lineage_rows = [[k.replace("_", " "), _f(v, 1) if isinstance(v, float) else
                     json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)]
                    for k, v in lin.items() if v is not None]
    return [
        ("Intended use", f"Research use: screening images for '{info['positive_class']}', as studied in "
                         f"'{info['study']}'. Not a medical device; its numbers hold only for images like the "
                         "data below, prepared the same way."),
        ("Model", (["", ""], model_rows)),
        ("Data and splits", data_note),
        ("", (["split", "images", "positive", "negative", "prevalence"], data_rows)),
        ("Metrics", "Point estimates with 95 % stratified bootstrap intervals (1,000 resamples), at the "
                    "threshold above. Operating points (sensitivity at a fixed specificity, and the reverse) "
                    "are the best any threshold reaches on that split."),
        ("!warn", no_test),
        ("", (["metric", *[s.name for s in splits]], rows)),
        ("ROC and calibration", "figures"),
        ("Confusion matrix at the threshold", (["split", "", "called positive", "called negative"],
                                               confusion_rows)),
        ("Lineage", (["", ""], lineage_rows)),
        ("Training config", "config"),
    ]


def render_markdown(info: dict[str, Any], val: "SplitScores", test: "SplitScores | None") -> str:
    """The card as Markdown (figures linked as the PNG files beside it)."""
    lines = [f"# Model card: {info['experiment_id']}", "",
             f"Study `{info['study']}`, exported {info['exported_at']} from `{info['checkpoint']}`.", ""]
    for heading, content in _sections(info, val, test):
        if heading == "!warn":
            if content:
                lines += [f"> **No test split.** {content}", ""]
            continue
        if heading:
            lines += [f"## {heading}", ""]
        if content == "figures":
            lines += ["![ROC curve](roc.png) ![Calibration](calibration.png)", ""]
        elif content == "config":
            lines += ["```json", json.dumps(info.get("config"), indent=1, default=str), "```", ""]
        elif isinstance(content, tuple):
            header, rows = content
            lines += ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
            lines.append("")
        elif content:
            lines += [str(content), ""]
    return "\n".join(lines)


def render_html(info: dict[str, Any], val: "SplitScores", test: "SplitScores | None",
                figures: dict[str, Path]) -> str:
    """The card as one self-contained HTML page (figures inlined as base64 PNG)."""
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>Model card: {esc(info['experiment_id'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>Model card: {esc(info['experiment_id'])}</h1>",
             f"<p class='muted'>Study {esc(info['study'])}, exported {esc(info['exported_at'])} from "
             f"{esc(info['checkpoint'])}.</p>"]
    for heading, content in _sections(info, val, test):
        if heading == "!warn":
            if content:
                parts.append(f"<p class='warn'><b>No test split.</b> {esc(content)}</p>")
            continue
        if heading:
            parts.append(f"<h2>{esc(heading)}</h2>")
        if content == "figures":
            for name, alt in (("roc", "ROC curve"), ("calibration", "calibration plot")):
                encoded = base64.b64encode(figures[name].read_bytes()).decode("ascii")
                parts.append(f"<img alt='{alt}' src='data:image/png;base64,{encoded}'>")
        elif content == "config":
            parts.append(f"<pre>{esc(json.dumps(info.get('config'), indent=1, default=str))}</pre>")
        elif isinstance(content, tuple):
            header, rows = content
            head = "".join(f"<th>{esc(str(h))}</th>" for h in header) if any(header) else ""
            body = "".join("<tr>" + "".join(
                f"<td class='num'>{c}</td>" if isinstance(c, (int, float)) else f"<td>{esc(str(c))}</td>"
                for c in r) + "</tr>" for r in rows)
            parts.append(f"<table>{'<tr>' + head + '</tr>' if head else ''}{body}</table>")
        elif content:
            parts.append(f"<p>{esc(str(content))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_card(folder: Path, info: dict[str, Any], val: "SplitScores", test: "SplitScores | None") -> None:
    """Draw the figures and write ``model_card.md`` and ``model_card.html`` into ``folder``."""
    splits = [s for s in (val, test) if s is not None]
    figures = {"roc": plot_roc(splits, info["threshold"], folder / "roc.png"),
               "calibration": plot_calibration(splits, folder / "calibration.png")}
    (folder / "model_card.md").write_text(render_markdown(info, val, test), encoding="utf-8")
    (folder / "model_card.html").write_text(render_html(info, val, test, figures), encoding="utf-8")
