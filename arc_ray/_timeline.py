"""The report's timeline: one row per trial slot, a bar per trial, decision rounds marked.

Idle slot time is what rolling decisions (``scheduling: rolling``) remove and what batch
cycles pay at every barrier; this figure shows it at a glance. The history does not
record which slot ran a trial, only when it ran (``started_at`` / ``ended_at`` of the
trials table), so trials are laid on slots greedily by start time: each goes to the
slot that has been free the longest (interval colouring: as many rows as trials ever
ran at once). Decision rounds are marked at the time their decisions were logged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from arc_ray.report import ReportData

STATUS_COLOURS = {"COMPLETED": "#55A868", "FAILED": "#C44E52", "CANCELLED": "#8C8C8C"}
STOPPED_EARLY_COLOUR = "#DD8452"


def assign_slots(spans: list[tuple[float, float]]) -> list[int]:
    """A slot (row) for each ``(start, end)``, so that no two trials of a row overlap.

    Returns:
        the slot of each span, in the order given.
    """
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    free_at: list[float] = []  # per slot: when its last trial ended
    slot = [0] * len(spans)
    for i in order:
        start, end = spans[i]
        ready = [k for k, t in enumerate(free_at) if t <= start + 1e-6]
        if ready:
            k = min(ready, key=lambda k: free_at[k])
            free_at[k] = end
        else:
            k = len(free_at)
            free_at.append(end)
        slot[i] = k
    return slot


def _ran(trials: "pd.DataFrame") -> "pd.DataFrame":
    if "started_at" not in trials.columns or "ended_at" not in trials.columns:
        return trials.iloc[0:0]
    ok = trials["started_at"].map(_finite) & trials["ended_at"].map(_finite)
    return trials[ok]


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def slot_utilisation(trials: "pd.DataFrame", slots: int) -> float | None:
    """Busy slot-seconds over ``slots`` × the span from the first start to the last end."""
    ran = _ran(trials)
    if not len(ran):
        return None
    t0, t1 = float(ran["started_at"].min()), float(ran["ended_at"].max())
    busy = float((ran["ended_at"] - ran["started_at"]).sum())
    return busy / (slots * (t1 - t0)) if t1 > t0 else None


def plot_timeline(data: "ReportData", path: Path) -> Path | None:
    """Draw the slot timeline; ``None`` when the history has no trial start / end times."""
    from arc_ray.report import _pyplot

    ran = _ran(data.trials)
    if not len(ran):
        return None
    plt = _pyplot()
    t0 = float(ran["started_at"].min())
    spans = [(float(s) - t0, float(e) - t0) for s, e in zip(ran["started_at"], ran["ended_at"])]
    slots = assign_slots(spans)
    n_rows = max(max(slots) + 1, data.study.max_concurrent_trials)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.45 * n_rows), dpi=110)
    early = ran["stopped_early"].fillna(False).astype(bool).tolist() if "stopped_early" in ran else [False] * len(ran)
    for (start, end), k, status, stopped in zip(spans, slots, ran["status"], early):
        colour = STOPPED_EARLY_COLOUR if stopped and status == "COMPLETED" else STATUS_COLOURS.get(status, "#8C8C8C")
        ax.barh(k, end - start, left=start, height=0.7, color=colour, edgecolor="white", linewidth=0.6)
    end_all = max(e for _, e in spans)
    rounds = sorted((t - t0, c) for c, t in data.round_times.items() if _finite(t) and t - t0 <= end_all)
    for t, c in rounds:
        ax.axvline(t, color="black", alpha=0.35, linewidth=0.8, linestyle=":")
    if rounds:
        ax.plot([t for t, _ in rounds], [-0.45] * len(rounds), "v", color="black", markersize=4,
                label=f"decision round ({len(rounds)})")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STATUS_COLOURS.values()]
    labels = [s.lower() for s in STATUS_COLOURS]
    handles.append(plt.Rectangle((0, 0), 1, 1, color=STOPPED_EARLY_COLOUR))
    labels.append("stopped early")
    if rounds:
        handles.append(ax.get_legend_handles_labels()[0][0])
        labels.append(f"decision round ({len(rounds)})")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    util = slot_utilisation(ran, n_rows)
    scheduling = getattr(data.study, "scheduling", "batch")
    ax.set_title(f"{data.study.name}: trial slots over time ({scheduling} decisions"
                 + (f", slots busy {util:.0%} of the time" if util is not None else "") + ")")
    ax.set_xlabel("seconds since the first trial started")
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([f"slot {k + 1}" for k in range(n_rows)])
    ax.set_ylim(-0.6, n_rows - 0.1)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # the legend sits outside the axes
    plt.close(fig)
    return path


__all__ = ["assign_slots", "plot_timeline", "slot_utilisation"]
