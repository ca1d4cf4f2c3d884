"""Test helpers for executors: runnable decisions, and a wait that only polls.

Executors take approved decisions that carry their config and never generate one, so
tests build those decisions here: :func:`approved` the way the supervisor does (through
:class:`arc_ray.configgen.ExperimentConfigGenerator`, which validates and writes the
config), :func:`runnable` straight from the baseline (for configs the search space does
not allow, such as the toy trainable's ``fail`` and ``sleep_s`` keys). The one wait loop
of ARC is the orchestrator's; :func:`wait_for` is the tests' stand-in, built only on the
executor contract (``poll``, ``wait_for_change``, ``cancel``).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Iterable

from arc_ray.configgen import ExperimentConfigGenerator
from arc_ray.executor import Executor
from arc_ray.records import Decision, DecisionOutcome, JobStatus, Proposal, Resources


def approved(study: Any, proposal: Proposal, cycle_id: int = 1, **decision: Any) -> Decision:
    """An approved decision for ``proposal``, its config generated and written by configgen.

    Raises:
        ConfigValidationError: the proposal's changes break the study's rules.
    """
    config = ExperimentConfigGenerator(study).generate_config(proposal.experiment_id, proposal)
    return Decision(experiment_id=proposal.experiment_id, cycle_id=cycle_id,
                    outcome=DecisionOutcome.APPROVED, decided_by="test", reason="test",
                    proposal=proposal, config=config, **decision)


def runnable(study: Any, eid: str, cycle: int = 1, resources: Resources | None = None,
             **changes: Any) -> Decision:
    """An approved decision with a ready config: the baseline plus ``changes``, unchecked."""
    config = {**copy.deepcopy(study.baseline), **changes, "experiment_id": eid}
    return Decision(experiment_id=eid, cycle_id=cycle, outcome=DecisionOutcome.APPROVED,
                    decided_by="test", reason="test", config=config, resources=resources)


def wait_for(executor: Executor, experiment_ids: Iterable[str], timeout: float, *,
             cancel_on_timeout: bool = False) -> dict[str, JobStatus]:
    """Poll until every experiment is terminal or ``timeout`` seconds pass.

    Args:
        executor: any executor.
        experiment_ids: the experiments to wait for.
        timeout: seconds.
        cancel_on_timeout: at the timeout, cancel what is still open and return the
            statuses after that.

    Returns:
        each experiment's status when the wait ends.
    """
    ids = list(experiment_ids)
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        statuses = executor.poll(ids)
        left = deadline - time.monotonic()
        if all(s.is_terminal() for s in statuses.values()) or left <= 0:
            break
        executor.wait_for_change(min(left, 1.0))
    open_ids = [i for i, s in statuses.items() if not s.is_terminal()]
    if open_ids and cancel_on_timeout:
        executor.cancel(open_ids, reason=f"not finished within the {timeout:g} s wait")
        statuses = executor.poll(ids)
    return statuses
