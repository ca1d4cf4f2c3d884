"""Feasibility first: what a study asks must be possible before a decision is logged.

A study whose trials ask for more than the cluster has would log its decisions, fail
at submit, and fail again on every resume of that cycle: stuck for good. So the driver
checks the study's per-trial resources right after connecting (before any decision),
and on resume re-validates each logged decision that has not run yet: one that can no
longer run (the cluster lacks its resources, its config no longer fits the study's
search space) is vetoed with its reason and the study goes on.

Only a Ray this driver started has a known, fixed size. On a cluster the driver
connected to, an autoscaler may still add nodes, so there a request beyond today's
resources is logged and left to wait.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from arc_ray.errors import ConfigValidationError, Violation

if TYPE_CHECKING:
    from arc_ray.records import Decision, Resources
    from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)


def cluster_started_here() -> bool:
    """Whether this process started its Ray itself (a local instance no autoscaler grows)."""
    try:
        from ray._private import worker

        node = worker._global_node
        return bool(node is not None and node.head)
    except Exception:  # a private detail of Ray: when in doubt, do not refuse
        return False


def cluster_totals() -> dict[str, float]:
    """The connected Ray cluster's CPU and GPU in all."""
    import ray

    total = ray.cluster_resources()
    return {"cpu": float(total.get("CPU", 0.0)), "gpu": float(total.get("GPU", 0.0))}


def resource_shortfall(asked: "Resources", totals: dict[str, float]) -> list[tuple[str, float, str]]:
    """``(kind, asked, rule)`` for each resource a trial asks beyond the cluster's total."""
    out = []
    for kind, value in (("cpu", asked.cpu), ("gpu", asked.gpu)):
        have = totals.get(kind, 0.0)
        if value > have:
            out.append((kind, value, f"asks {value:g} {kind.upper()} per trial; the Ray cluster has "
                                     f"{have:g} {kind.upper()} in all"))
    return out


def check_cluster_fits(study: "StudyConfig", *, started_here: bool | None = None) -> None:
    """Check the study's per-trial resources against the connected cluster.

    Args:
        study: the study.
        started_here: whether this driver started its Ray (a fixed size): then a trial
            that can never be placed is refused; otherwise it is logged and waits.
            Default: :func:`cluster_started_here`.

    Raises:
        ConfigValidationError: naming ``resources.<kind>``, on a Ray started here.
    """
    problems = resource_shortfall(study.resources, cluster_totals())
    if not problems:
        return
    if started_here is None:
        started_here = cluster_started_here()
    if started_here:
        raise ConfigValidationError([Violation(f"resources.{kind}", value, rule) for kind, value, rule in problems],
                                    source=study.source_path)
    for kind, _, rule in problems:
        logger.warning("resources.%s %s; trials wait until the autoscaler adds nodes", kind, rule)


def decision_problem(decision: "Decision", study: "StudyConfig", totals: dict[str, float] | None) -> str | None:
    """Why a logged, not yet run decision can no longer run, or ``None`` when it can.

    Args:
        decision: an approved or repaired decision.
        study: the study as it is now (its file may have changed since the decision).
        totals: the cluster's resources when its size is fixed, else ``None`` (not judged).
    """
    from arc_ray.study import flatten_config

    if decision.config is None:
        return "it has no config"
    flat = {k: v for k, v in flatten_config(decision.config).items() if k != "experiment_id"}
    _, violations = study.search_space.validate_flat(flat)
    if violations:
        return "its config no longer fits the study: " + "; ".join(str(v) for v in violations[:3])
    if totals is not None:
        asked = decision.resources or (decision.proposal.resources if decision.proposal else None) \
            or study.resources
        short = resource_shortfall(asked, totals)
        if short:
            return "it can no longer run: " + "; ".join(f"resources.{k} {rule}" for k, _, rule in short)
    return None


def veto_unrunnable(decisions: list["Decision"], study: "StudyConfig", totals: dict[str, float] | None,
                    ) -> list["Decision"]:
    """Superseding ``vetoed`` decisions for each of ``decisions`` that can no longer run."""
    from arc_ray.records import DecisionOutcome

    out: list[Any] = []
    for d in decisions:
        problem = decision_problem(d, study, totals)
        if problem is None:
            continue
        logger.warning("cycle %d: %s vetoed on resume: %s", d.cycle_id, d.experiment_id, problem)
        out.append(d.model_copy(update={"outcome": DecisionOutcome.VETOED, "decided_by": "resume",
                                        "reason": f"vetoed on resume: {problem}"}))
    return out


__all__ = ["check_cluster_fits", "cluster_started_here", "cluster_totals", "decision_problem", "resource_shortfall", "veto_unrunnable"]
