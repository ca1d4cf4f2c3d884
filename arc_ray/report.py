"""The study report: trend plots (PNG) and one self-contained HTML page.

``arc report CONFIG --out DIR`` calls :func:`build_report`, which reads the study's
Parquet history (the historian's ``trials``, ``decisions``, ``cycles`` and
``constraints`` tables, read as files through the read-only
:class:`~arc_ray.historian.HistoryReader`: no Ray needed, nothing written to the
storage) and writes:

* ``metric_by_cycle.png``: every trial's final metric by cycle, the best so far after
  each cycle, and the study's target;
* ``modes.png``: the director's strategy mode of each cycle, with the trials it ran;
* ``parameters.png``: the metric against the most important parameters (importance
  from a random forest fitted on the completed trials, scikit-learn);
* ``timeline.png``: one row per trial slot, a bar per trial coloured by outcome, the
  decision rounds marked (:mod:`arc_ray._timeline`; histories without trial times skip it);
* ``report.html``: one page with the figures embedded as base64 (so it can be mailed
  or opened offline), the top experiments, the last cycle's decisions with their
  rationales, learned constraints and patterns.

Plots are drawn with matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from arc_ray._timeline import plot_timeline
from arc_ray.errors import HistoryError
from arc_ray.historian.schema import (
    CONFIG_PREFIX,
    CYCLE_ID,
    EXPERIMENT_ID,
    METRIC_PREFIX,
    MODE,
    PROPOSER,
    STATUS,
)
from arc_ray.records import Constraint, Decision, HistorySummary, Pattern

if TYPE_CHECKING:
    import pandas as pd

    from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)

MODE_COLOURS = {"explore": "#4C72B0", "exploit": "#55A868", "recover": "#C44E52"}
_UNKNOWN_COLOUR = "#8C8C8C"


class EmptyHistoryError(HistoryError, LookupError):
    """The study has no trial in its history yet, so there is nothing to report."""


@dataclass
class ReportData:
    """What the report is drawn from, already read out of the history.

    Attributes:
        study: the study reported on.
        trials: the trials table as a DataFrame (contract schema: ``experiment_id``,
            ``cycle_id``, ``status``, ``config.<name>``, ``metric.<name>``, ...).
        cycle_modes: strategy mode of each cycle, by cycle id.
        last_decisions: the decisions of the last decided cycle.
        constraints: learned constraints (and declared ones, marked by ``source``).
        patterns: parameter values over-represented among the best experiments.
        summary: the historian's summary, when one could be computed.
    """

    study: "StudyConfig"
    trials: "pd.DataFrame"
    cycle_modes: dict[int, str] = field(default_factory=dict)
    last_decisions: list[Decision] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    patterns: list[Pattern] = field(default_factory=list)
    summary: HistorySummary | None = None
    round_times: dict[int, float] = field(default_factory=dict)  # cycle → when its decisions were logged

    @property
    def metric_column(self) -> str:
        return METRIC_PREFIX + self.study.metric

    def completed(self) -> "pd.DataFrame":
        """Completed trials that reported the study metric as a finite number."""
        df = self.trials
        if self.metric_column not in df.columns:
            return df.iloc[0:0]
        ok = (df[STATUS] == "COMPLETED") & df[self.metric_column].notna()
        ok &= df[self.metric_column].map(lambda v: math.isfinite(float(v)))
        return df[ok]

    def feasible(self, rows: "pd.DataFrame") -> "pd.Series":
        """Per row: whether it meets every outcome constraint (all ``True`` without any)."""
        from arc_ray.outcomes import is_feasible

        constraints = self.study.outcome_constraints
        n = len(METRIC_PREFIX)
        return rows.apply(lambda r: is_feasible({k[n:]: r[k] for k in r.index if k.startswith(METRIC_PREFIX)
                                                 and r[k] is not None}, constraints),
                          axis=1).astype(bool) if len(rows) else rows.index.to_series().astype(bool)


@dataclass
class Report:
    """Where :func:`build_report` wrote its files."""

    html: Path
    figures: dict[str, Path]
    n_trials: int
    best_value: float | None
    best_experiment_id: str | None


# ----------------------------------------------------------------------- loading


def load_report_data(study: "StudyConfig", historian: Any | None = None) -> ReportData:
    """Read the study's history into a :class:`ReportData`.

    Args:
        study: the study.
        historian: what to read through: a :class:`~arc_ray.historian.HistoryReader` or a
            :class:`~arc_ray.historian.Historian`; default: a fresh reader over ``study``'s
            storage, which writes nothing there (the report goes to its own folder).

    Raises:
        EmptyHistoryError: the history holds no trial.
        HistoryError: the history cannot be read.
    """
    if historian is None:
        from arc_ray.historian import HistoryReader

        historian = HistoryReader(study)
    trials = historian.trials_table()
    if trials is None or trials.num_rows == 0:
        raise EmptyHistoryError(
            f"no trial in the history of study {study.name!r} at {study.study_dir}; "
            "run `arc run CONFIG` first")
    cycles = historian.cycles_table()
    modes = cycle_modes(cycles)
    last_decisions: list[Decision] = []
    decided = historian.cycle_ids()["decided"]
    if decided:
        last_decisions = list(historian.decisions_for_cycle(max(decided)))
    summary = historian.summary()
    df = trials.to_pandas()
    column = METRIC_PREFIX + study.metric
    if column not in df.columns:  # no trial ever reported the metric: every plot still draws
        df[column] = float("nan")
    return ReportData(study=study, trials=df, cycle_modes=modes,
                      last_decisions=last_decisions,
                      constraints=list(summary.constraints), patterns=list(summary.patterns),
                      summary=summary, round_times=round_times(historian.decisions_table()))


def round_times(decisions: pa.Table | None) -> dict[int, float]:
    """When each cycle's (decision round's) decisions were logged, from the ``decisions`` table."""
    if decisions is None or decisions.num_rows == 0 or "logged_at" not in decisions.column_names:
        return {}
    out: dict[int, float] = {}
    for c, t in zip(decisions.column(CYCLE_ID).to_pylist(), decisions.column("logged_at").to_pylist()):
        if c is not None and t is not None:
            out[int(c)] = min(out.get(int(c), t), t)
    return out


def cycle_modes(cycles: pa.Table | None) -> dict[int, str]:
    """Strategy mode by cycle id, from the historian's ``cycles`` table."""
    if cycles is None or cycles.num_rows == 0 or MODE not in cycles.column_names:
        return {}
    ids = cycles.column(CYCLE_ID).to_pylist()
    modes = cycles.column(MODE).to_pylist()
    return {int(c): str(m) for c, m in zip(ids, modes) if c is not None and m is not None}


# ----------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def best_so_far_by_cycle(data: ReportData) -> tuple[list[int], list[float]]:
    """The best feasible metric value after each cycle (cycles with none carry it on)."""
    done = data.completed()
    done = done[data.feasible(done)]
    cycles = sorted(set(int(c) for c in data.trials[CYCLE_ID].dropna()) | set(data.cycle_modes))
    xs: list[int] = []
    ys: list[float] = []
    best: float | None = None
    for c in cycles:
        values = done.loc[done[CYCLE_ID] == c, data.metric_column].astype(float).tolist()
        for v in values:
            if best is None or data.study.better(v, best):
                best = v
        if best is not None:
            xs.append(c)
            ys.append(best)
    return xs, ys


def plot_metric_by_cycle(data: ReportData, path: Path) -> Path:
    """Per-trial metric by cycle (jittered dots), best so far (step line) and target."""
    import numpy as np

    plt = _pyplot()
    metric = data.study.metric
    done = data.completed()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    rng = np.random.default_rng(0)
    if len(done):
        feasible = data.feasible(done).to_numpy()
        cyc = done[CYCLE_ID].astype(float).to_numpy()
        jitter = cyc + rng.uniform(-0.15, 0.15, len(cyc))
        colours = [MODE_COLOURS.get(data.cycle_modes.get(int(c), ""), _UNKNOWN_COLOUR) for c in cyc]
        values = done[data.metric_column].astype(float).to_numpy()
        ax.scatter(jitter[feasible], values[feasible], c=[c for c, f in zip(colours, feasible) if f],
                   s=28, alpha=0.8, edgecolors="white", linewidths=0.5,
                   label="trial (colour: cycle mode)", zorder=3)
        if not feasible.all():  # hollow: completed, but breaking an outcome constraint
            bounds = ", ".join(map(str, data.study.outcome_constraints))
            ax.scatter(jitter[~feasible], values[~feasible], facecolors="none", edgecolors="#8C8C8C",
                       s=28, linewidths=1.0, label=f"infeasible ({int((~feasible).sum())}; {bounds})",
                       zorder=3)
    failed = data.trials[data.trials[STATUS] != "COMPLETED"]
    if len(failed) and len(done):
        low = float(done[data.metric_column].min())
        span = float(done[data.metric_column].max()) - low or 1.0
        fc = failed[CYCLE_ID].astype(float).to_numpy()
        ax.scatter(fc + rng.uniform(-0.15, 0.15, len(fc)), np.full(len(fc), low - 0.08 * span),
                   marker="x", c="#C44E52", s=30, label=f"failed / cancelled ({len(failed)})", zorder=3)
    xs, ys = best_so_far_by_cycle(data)
    if xs:
        ax.step(xs, ys, where="post", color="black", linewidth=1.8, label="best so far", zorder=4)
    if data.study.target is not None:
        ax.axhline(data.study.target, color="#DD8452", linestyle="--", linewidth=1.2,
                   label=f"target {data.study.target:g}")
    ax.set_xlabel("cycle")
    ax.set_ylabel(metric)
    ax.set_title(f"{data.study.name}: {metric} by cycle ({data.study.mode})")
    cycles = sorted(set(int(c) for c in data.trials[CYCLE_ID].dropna()))
    if cycles:
        ax.set_xticks(cycles if len(cycles) <= 30 else cycles[:: max(1, len(cycles) // 15)])
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to label when no trial has the metric
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_modes(data: ReportData, path: Path) -> Path:
    """One bar per cycle: its height the trials it ran (failed hatched), its colour the mode."""
    plt = _pyplot()
    trials = data.trials
    cycles = sorted(set(int(c) for c in trials[CYCLE_ID].dropna()) | set(data.cycle_modes))
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=110)
    for c in cycles:
        rows = trials[trials[CYCLE_ID] == c]
        n_ok = int((rows[STATUS] == "COMPLETED").sum())
        n_bad = len(rows) - n_ok
        mode = data.cycle_modes.get(c, "?")
        colour = MODE_COLOURS.get(mode, _UNKNOWN_COLOUR)
        ax.bar(c, n_ok, color=colour, edgecolor="black", linewidth=0.5)
        if n_bad:
            ax.bar(c, n_bad, bottom=n_ok, color=colour, alpha=0.45, hatch="//",
                   edgecolor="black", linewidth=0.5)
        ax.text(c, n_ok + n_bad + 0.05, mode, ha="center", va="bottom", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in MODE_COLOURS.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch="//"))
    ax.legend(handles, [*MODE_COLOURS, "failed"], loc="upper left", fontsize=8, ncol=4)
    ax.set_xlabel("cycle")
    ax.set_ylabel("trials run")
    ax.set_title("strategy mode per cycle")
    if cycles:
        ax.set_xticks(cycles if len(cycles) <= 30 else cycles[:: max(1, len(cycles) // 15)])
    top = max([len(trials[trials[CYCLE_ID] == c]) for c in cycles] or [1])
    ax.set_ylim(0, top * 1.35 + 0.5)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def parameter_importance(data: ReportData) -> list[tuple[str, float]]:
    """Searchable parameters by importance for the metric, most important first.

    A random forest (scikit-learn) is fitted on the unit-cube encoding of the completed
    trials' configs; its impurity importances rank the parameters. With fewer than five
    completed trials there is nothing to fit, and the parameters that varied come in
    search-space order with importance 0.
    """
    import numpy as np

    done = data.completed()
    space = data.study.search_space
    columns = [n for n in space.names if CONFIG_PREFIX + n in done.columns
               and done[CONFIG_PREFIX + n].dropna().astype(str).nunique() > 1]
    if len(done) < 5 or not columns:
        return [(n, 0.0) for n in columns]
    from sklearn.ensemble import RandomForestRegressor

    rows = []
    for _, r in done.iterrows():
        rows.append([_unit(space[n], r[CONFIG_PREFIX + n]) for n in columns])
    x = np.array(rows, dtype=float)
    x = np.where(np.isnan(x), 0.5, x)
    y = done[data.metric_column].astype(float).to_numpy()
    forest = RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=0)
    forest.fit(x, y)
    ranked = sorted(zip(columns, forest.feature_importances_), key=lambda t: -t[1])
    return [(n, float(i)) for n, i in ranked]


def _unit(spec: Any, value: Any) -> float:
    from arc_ray.space import unit_array

    # the search space's one unit-cube encoding; a value it no longer accepts is unknown
    return float(unit_array(spec, [value], beyond="nan")[0])


def plot_parameters(data: ReportData, path: Path, top_k: int = 4) -> Path | None:
    """The metric against the ``top_k`` most important parameters; ``None`` if none varied."""
    import numpy as np

    ranked = parameter_importance(data)[:top_k]
    if not ranked:
        return None
    plt = _pyplot()
    done = data.completed()
    y = done[data.metric_column].astype(float).to_numpy()
    fig, axes = plt.subplots(1, len(ranked), figsize=(3.2 * len(ranked) + 0.6, 3.4), dpi=110,
                             sharey=True, squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (name, importance) in zip(axes[0], ranked):
        spec = data.study.search_space[name]
        values = done[CONFIG_PREFIX + name].tolist()
        if spec.type in ("float", "int"):
            xs = np.array([float(v) if v is not None else np.nan for v in values])
            ax.scatter(xs, y, s=24, alpha=0.8, color="#4C72B0", edgecolors="white", linewidths=0.5)
            if spec.log:
                ax.set_xscale("log")
        else:
            labels = [str(c) for c in spec.values]
            pos = {lab: i for i, lab in enumerate(labels)}
            xs = np.array([pos.get(str(v), np.nan) for v in values], dtype=float)
            ax.scatter(xs + rng.uniform(-0.12, 0.12, len(xs)), y, s=24, alpha=0.8, color="#4C72B0",
                       edgecolors="white", linewidths=0.5)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=30 if max(map(len, labels)) > 6 else 0, fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        title = name if not importance else f"{name} (importance {importance:.2f})"
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(data.study.metric)
    fig.suptitle(f"{data.study.metric} against the most important parameters", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -------------------------------------------------------------------------- html


def top_experiments(data: ReportData, n: int = 10) -> "pd.DataFrame":
    """The ``n`` best completed experiments, best first (feasible ones before the rest)."""
    done = data.completed()
    ascending = data.study.mode == "min"
    done = done.sort_values(data.metric_column, ascending=ascending, kind="stable")
    if data.study.outcome_constraints:
        done = done.assign(_feasible=data.feasible(done)).sort_values("_feasible", ascending=False,
                                                                       kind="stable").drop(columns="_feasible")
    return done.head(n)


def best_experiment(data: ReportData) -> "pd.DataFrame":
    """The study's best as one row: the best feasible completed experiment (or none)."""
    best = top_experiments(data, 1)
    return best[data.feasible(best)] if len(best) else best


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.4g}"
    return str(v)


def _config_changes(data: ReportData, row: "pd.Series") -> str:
    """The searchable parameters where an experiment differs from the baseline."""
    from arc_ray.space import flatten_config

    base = flatten_config(data.study.baseline)
    parts = []
    for name in data.study.search_space.names:
        col = CONFIG_PREFIX + name
        if col in row.index and row[col] is not None and not _is_nan(row[col]):
            if row[col] != base.get(name):
                parts.append(f"{name}={_fmt(row[col])}")
    return ", ".join(parts) or "(baseline)"


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return f"<p class='muted'>({html.escape(alt)}: not enough varied parameters to plot)</p>"
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4} img{max-width:100%;margin:.5em 0} .muted{color:#777}
.kpi{display:inline-block;margin-right:2em} .kpi b{font-size:1.4em;display:block}
"""


def render_html(data: ReportData, figures: dict[str, Path | None], top_n: int = 10) -> str:
    """The self-contained HTML page (figures inlined as base64 PNG)."""
    study = data.study
    metric = study.metric
    done = data.completed()
    best = best_experiment(data)
    best_value = float(best[data.metric_column].iloc[0]) if len(best) else None
    best_id = str(best[EXPERIMENT_ID].iloc[0]) if len(best) else None
    n_cycles = len(set(int(c) for c in data.trials[CYCLE_ID].dropna()) | set(data.cycle_modes))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ARC report: {html.escape(study.name)}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>ARC study report: {html.escape(study.name)}</h1>",
             f"<p class='muted'>{html.escape(study.description)} Generated "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')} from {html.escape(study.study_dir)}.</p>",
             "<div>"]
    kpis = [(f"best {metric}", _fmt(best_value) if best_value is not None else "none"),
            ("best experiment", best_id or "none"),
            ("target", _fmt(study.target) if study.target is not None else "none"),
            ("trials", f"{len(data.trials)} ({len(done)} completed)"), ("cycles", str(n_cycles))]
    parts += [f"<span class='kpi'>{html.escape(k)}<b>{html.escape(v)}</b></span>" for k, v in kpis]
    parts.append("</div>")

    parts.append("<h2>Progress</h2>")
    parts.append(_img(figures.get("metric_by_cycle"), "metric by cycle"))
    parts.append(_img(figures.get("modes"), "strategy mode per cycle"))
    if figures.get("timeline") is not None:
        parts.append(_img(figures["timeline"], "trial slots over time"))
    parts.append("<h2>What mattered</h2>")
    parts.append(_img(figures.get("parameters"), "metric against the most important parameters"))

    parts.append(f"<h2>Top {top_n} experiments</h2>")
    other_metrics = [c for c in data.trials.columns if c.startswith(METRIC_PREFIX) and c != data.metric_column]
    constrained = bool(data.study.outcome_constraints)
    headers = ["#", "experiment", "cycle", *(["feasible"] if constrained else []), metric,
               *[c[len(METRIC_PREFIX):] for c in other_metrics][:4], "proposer", "changes from baseline"]
    rows = []
    top = top_experiments(data, top_n)
    feasible = data.feasible(top)
    for rank, (i, r) in enumerate(top.iterrows(), 1):
        mark = [("yes" if feasible[i] else "no")] if constrained else []
        rows.append([rank, r[EXPERIMENT_ID], int(r[CYCLE_ID]), *mark, float(r[data.metric_column]),
                     *[r[c] for c in other_metrics][:4], r.get(PROPOSER), _config_changes(data, r)])
    parts.append(_table(headers, rows) if rows else "<p class='muted'>No completed experiment.</p>")

    if data.last_decisions:
        cycle = data.last_decisions[0].cycle_id
        mode = data.cycle_modes.get(cycle)
        parts.append(f"<h2>Decisions of the last cycle ({cycle}{', ' + mode if mode else ''})</h2>")
        rows = []
        for d in sorted(data.last_decisions, key=lambda d: (d.rank is None, d.rank or 0, d.experiment_id)):
            p = d.proposal
            rows.append([d.experiment_id, d.outcome.value, d.decided_by, d.reason,
                         p.proposer if p else "", p.type.value if p else "",
                         json.dumps(p.changes, default=str) if p else "",
                         p.rationale if p else "", d.weighted_score])
        parts.append(_table(["experiment", "outcome", "decided by", "reason", "proposer", "type",
                             "changes", "rationale", "vote score"], rows))

    parts.append("<h2>Learned constraints</h2>")
    learned = [c for c in data.constraints if c.source != "declared"]
    if learned:
        parts.append(_table(["id", "region", "reason", "error class", "failed / succeeded"],
                            [[c.id, c.describe(), c.reason, c.error_class.value if c.error_class else "",
                              f"{c.n_failed} / {c.n_succeeded}"] for c in learned]))
    else:
        parts.append("<p class='muted'>None learned yet (no repeated failure region).</p>")
    declared = list(study.constraints)
    if declared:
        parts.append("<p>Declared in the study file:</p>")
        parts.append(_table(["id", "region", "reason"], [[c.id, c.describe(), c.reason] for c in declared]))

    parts.append("<h2>Patterns among the best experiments</h2>")
    if data.patterns:
        parts.append(_table(["parameter", "value", "support", "lift", "share in top quartile", "share overall"],
                            [[p.parameter, p.value, p.support, p.lift, p.top_share, p.all_share]
                             for p in data.patterns]))
    else:
        parts.append("<p class='muted'>No pattern yet (too few completed experiments).</p>")
    if data.summary is not None and data.summary.failures_by_class:
        parts.append("<h2>Failures by class</h2>")
        parts.append(_table(["class", "count"], sorted(map(list, data.summary.failures_by_class.items()))))
    parts.append("</body></html>")
    return "\n".join(parts)


def render_report(data: ReportData, out_dir: str | Path, top_n: int = 10) -> Report:
    """Draw the figures and write ``report.html`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path | None] = {
        "metric_by_cycle": plot_metric_by_cycle(data, out / "metric_by_cycle.png"),
        "modes": plot_modes(data, out / "modes.png"),
        "parameters": plot_parameters(data, out / "parameters.png"),
        "timeline": plot_timeline(data, out / "timeline.png"),
    }
    page = render_html(data, figures, top_n=top_n)
    target = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)  # a reader never sees half a page
    best = best_experiment(data)
    logger.info("report written to %s", target)
    return Report(html=target, figures={k: v for k, v in figures.items() if v is not None},
                  n_trials=len(data.trials),
                  best_value=float(best[data.metric_column].iloc[0]) if len(best) else None,
                  best_experiment_id=str(best[EXPERIMENT_ID].iloc[0]) if len(best) else None)


def build_report(study: "StudyConfig", out_dir: str | Path, *, historian: Any | None = None,
                 top_n: int = 10) -> Report:
    """Read the study's history and write the figures and ``report.html`` under ``out_dir``.

    Raises:
        EmptyHistoryError: the history holds no trial.
    """
    return render_report(load_report_data(study, historian), out_dir, top_n=top_n)


__all__ = [
    "EmptyHistoryError",
    "Report",
    "ReportData",
    "best_so_far_by_cycle",
    "build_report",
    "load_report_data",
    "parameter_importance",
    "render_report",
]
