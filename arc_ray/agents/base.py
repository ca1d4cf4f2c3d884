"""The agent contract: :class:`Agent`, :class:`Proposer` and the :class:`AgentContext` they read."""

from __future__ import annotations

import collections
import logging
import re
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from arc_ray.agents._constraints import project_out
from arc_ray.agents._history import HistoryView
from arc_ray.configgen import ExperimentConfigGenerator
from arc_ray.errors import ConfigValidationError
from arc_ray.records import Constraint, HistorySummary, Proposal, ProposalType, Strategy, Vote
from arc_ray.study import StudyConfig

if TYPE_CHECKING:
    from arc_ray.world_model import WorldModel

logger = logging.getLogger(__name__)


class AgentContext(BaseModel):
    """What an agent knows when it proposes or votes in one cycle.

    Picklable (it travels to agent actors): the trials table is a pyarrow Table, and
    the derived :meth:`history` view is computed once and carried along.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    study: StudyConfig
    cycle_id: int = Field(ge=0)
    summary: HistorySummary
    strategy: Strategy | None = None
    trials: pa.Table = Field(default_factory=lambda: pa.table({}))  # the historian's trials table
    quota: int = Field(0, ge=0)  # proposals wanted from the agent receiving this context

    _view: HistoryView | None = PrivateAttr(None)
    _generator: ExperimentConfigGenerator | None = PrivateAttr(None)

    def history(self) -> HistoryView:
        """The trials table over the searched parameters (computed once, then cached)."""
        if self._view is None:
            self._view = HistoryView(self.trials, self.study.search_space, self.study.metric,
                                     self.study.sign, self.study.baseline)
        return self._view

    def config_generator(self) -> ExperimentConfigGenerator:
        """The study's config generator holding the historian's learned constraints.

        Built once per context and carried with it (it pickles), so the collective, every
        proposer and the supervisor judge a config by the same rules in a cycle.
        """
        if self._generator is None:
            self._generator = ExperimentConfigGenerator(self.study, constraints=self.summary.learned_constraints())
        return self._generator


class Agent(ABC):
    """One member of the collective.

    Contract:
        * The collective (``arc_ray.agents.collective.Collective``) calls, once per
          cycle and in this order: ``director.plan(summary)``; ``propose(ctx)`` on every
          agent whose quota in the director's strategy is above zero (in parallel);
          ``critic.assess(proposals, ctx)`` for the forecasts it attaches to the
          proposals; ``vote(proposals, ctx)`` on every agent but the supervisor (in
          parallel); ``supervisor.review(ranking, ctx)``. Any call may happen in another
          process: agents are plain classes that the orchestrator turns into Ray
          actors, so arguments and results must pickle, and nothing may rely on shared
          memory with the driver.
        * ``propose`` returns at most ``ctx.quota`` :class:`Proposal`\\ s whose
          ``experiment_id`` is unique across the study (use :meth:`Proposer.experiment_id`)
          and whose ``changes`` are relative to the baseline.
        * ``vote`` returns at most one :class:`Vote` per proposal; an agent abstains on a
          proposal by returning no vote for it. Agents do not vote on their own
          proposals. The collective sets each vote's ``agent`` and ``weight`` from the
          study's voting settings, so an agent cannot weigh its own opinion.
        * An agent may keep state between cycles (a warm Optuna study); it owns that
          state, and a single actor serves one call at a time, so no locking is needed.
        * Raising, or returning anything but the documented types, costs the agent its
          own proposals or votes in that cycle — never the cycle.

    Args:
        study: the study the agent works for.
        name: its name in the collective (the key of ``VotingSettings.weights``).
    """

    name: str = "agent"

    def __init__(self, study: StudyConfig, name: str | None = None) -> None:
        self.study = study
        if name is not None:
            self.name = name

    def propose(self, ctx: AgentContext) -> list[Proposal]:
        """Experiments this agent wants run this cycle; default: none."""
        return []

    @abstractmethod
    def vote(self, proposals: list[Proposal], ctx: AgentContext) -> list[Vote]:
        """This agent's opinion of each proposal (abstain by returning no vote for it)."""

    def served_study(self) -> str:
        """The study this agent serves, as JSON (tells a reusable named actor from a stale one)."""
        return self.study.model_dump_json()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, study={self.study.name!r})"


_ID_PART = re.compile(r"[^A-Za-z0-9_.-]+")


class Proposer(Agent):
    """An agent that proposes experiments and judges others' by its own model of goodness.

    Subclasses implement :meth:`propose` and :meth:`goodness`; the base class turns
    goodness scores into votes, skipping the proposer's own proposals.
    """

    proposal_type: ProposalType = ProposalType.HYPERPARAMETER_TUNING

    @classmethod
    def applies_to(cls, study: StudyConfig) -> bool:
        """Whether this proposer has anything to propose in ``study`` (the director gives
        no quota to one that has not, e.g. the architect in a space without a model)."""
        return True

    @abstractmethod
    def propose(self, ctx: AgentContext) -> list[Proposal]:
        """At most ``ctx.quota`` proposals."""

    def goodness(self, proposals: list[Proposal], ctx: AgentContext) -> list[tuple[float, str] | None]:
        """Score in [0, 1] and a reason for each proposal; ``None`` abstains. Default: abstain."""
        return [None] * len(proposals)

    def vote(self, proposals: list[Proposal], ctx: AgentContext) -> list[Vote]:
        others = [p for p in proposals if p.proposer != self.name]
        if not others:
            return []
        votes = []
        for p, judged in zip(others, self.goodness(others, ctx)):
            if judged is None:
                continue
            score, reason = judged
            score = float(np.clip(score, 0.0, 1.0))
            votes.append(Vote(agent=self.name, experiment_id=p.experiment_id, approve=score >= 0.5,
                              score=score, rationale=reason))
        return votes

    # ---------------------------------------------------------------- helpers

    def experiment_id(self, ctx: AgentContext, k: int) -> str:
        """``c<cycle>-<name>-<k>``: unique across the study while names and cycle ids are."""
        part = _ID_PART.sub("_", self.name)[:40] or "agent"
        return f"c{ctx.cycle_id:04d}-{part}-{k:02d}"

    def searched(self, ctx: AgentContext) -> list[str]:
        """Searched parameter names this proposer may change (minus ``proposers.exclude``)."""
        return self.study.searched_names

    def constraints(self, ctx: AgentContext) -> list[Constraint]:
        """Declared constraints and the historian's learned ones."""
        return ctx.config_generator().constraints

    def admissible(self, flat: Mapping[str, Any], ctx: AgentContext) -> tuple[dict[str, Any] | None, list[str]]:
        """``flat`` moved out of forbidden regions if needed, and validated.

        Returns:
            ``(config, notes on the moves)``, or ``(None, [the rules broken])`` when it
            cannot be made valid.
        """
        moved, notes = project_out(flat, self.constraints(ctx), self.study.search_space,
                                   fixed=self.study.proposers.exclude)
        try:
            ctx.config_generator().validate(self.changes_from(moved, ctx))
        except ConfigValidationError as exc:
            return None, [str(v) for v in exc.violations]
        return moved, notes

    def changes_from(self, flat: Mapping[str, Any], ctx: AgentContext) -> dict[str, Any]:
        """Changes (dotted keys) that set every non-excluded searched parameter as in ``flat``.

        Whole assignments rather than differences keep a proposal meaning the same
        config whatever the baseline holds.
        """
        return {n: _plain(flat[n]) for n in self.searched(ctx) if n in flat}

    def proposal_of(self, ctx: AgentContext, k: int, flat: Mapping[str, Any], notes: Sequence[str],
                    why: str) -> Proposal:
        """Proposal ``k`` setting ``flat`` (an :meth:`admissible` config): the rationale is
        ``why``, the config, and the moves that made it admissible (``notes``)."""
        rationale = f"{why}: {describe_config(flat)}" + (f"; moved {', '.join(notes)}" if notes else "")
        return self.proposal(ctx, k, self.changes_from(flat, ctx), rationale)

    def proposal(self, ctx: AgentContext, k: int, changes: Mapping[str, Any], rationale: str,
                 **fields: Any) -> Proposal:
        fields.setdefault("type", self.proposal_type)
        return Proposal(experiment_id=self.experiment_id(ctx, k), changes=dict(changes),
                        rationale=rationale, proposer=self.name, cycle_id=ctx.cycle_id, **fields)


def _plain(value: Any) -> Any:
    """numpy scalars → Python scalars, so configs stay YAML/JSON-clean."""
    if isinstance(value, np.generic):
        return value.item()
    return value


RISK_MARGIN = 0.1  # how far above the history's failure rate a forecast counts as a risky region


def risk_cap(study: StudyConfig, view: HistoryView) -> float:
    """The failure probability above which a proposal is too risky to run.

    ``supervisor.max_failure_probability``, raised to the history's own failure rate
    plus :data:`RISK_MARGIN` when that is higher: the cap is meant for regions the world
    model sees failing, and when most trials so far failed every forecast sits near that
    rate — a fixed cap would then stop the study instead of letting it recover.
    """
    return min(1.0, max(study.supervisor.max_failure_probability, view.failure_rate() + RISK_MARGIN))


# Fits shared by the agents of one process within a cycle: (table, study, options) → model.
_FITTED: "collections.OrderedDict[tuple, tuple[pa.Table, WorldModel]]" = collections.OrderedDict()
_FITTED_LOCK = threading.Lock()
_FITTED_KEEP = 4


def world_model_for(ctx: AgentContext, seed: int = 0, **options: Any) -> "WorldModel":
    """A world model fitted on the context's trials (``options``: :class:`WorldModel` arguments).

    Agents that share a process (in-driver mode) and a cycle's trials table share one
    fit: the critic and the surrogate proposer ask for the same model, and a fit is most
    of a cheap study's decision time. Options that cannot change the fit on this table
    (a ``max_fit_size`` above its row count) do not tell fits apart. A shared model is
    only read (``predict``, ``expected_improvement``), never changed.
    """
    from arc_ray.world_model import WorldModel

    n = ctx.trials.num_rows
    if options.get("max_fit_size", 500) >= n:
        options = {k: v for k, v in options.items() if k != "max_fit_size"}
    key = (id(ctx.trials), id(ctx.study), seed, tuple(sorted(options.items())))
    with _FITTED_LOCK:
        hit = _FITTED.get(key)
        if hit is not None and hit[0] is ctx.trials:
            _FITTED.move_to_end(key)
            return hit[1]
    wm = WorldModel(seed=seed, **options).fit(ctx.trials, ctx.study.search_space, ctx.study.metric,
                                              ctx.study.sign, baseline_config=ctx.study.baseline)
    with _FITTED_LOCK:  # the table is held with its model, so its id is not reused meanwhile
        _FITTED[key] = (ctx.trials, wm)
        while len(_FITTED) > _FITTED_KEEP:
            _FITTED.popitem(last=False)
    return wm


def describe_config(flat: Mapping[str, Any], names: Sequence[str] | None = None, limit: int = 6) -> str:
    """``lr=0.003, model=resnet18, …`` for rationales."""
    items = [(n, flat[n]) for n in (names or list(flat)) if n in flat]
    parts = [f"{n}={v:.3g}" if isinstance(v, float) else f"{n}={v}" for n, v in items[:limit]]
    if len(items) > limit:
        parts.append(f"… (+{len(items) - limit})")
    return ", ".join(parts)
