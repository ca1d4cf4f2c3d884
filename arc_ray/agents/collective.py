"""The collective: one cycle's decision, from the historian's summary to approved decisions.

``Collective.decide`` runs steps 2–6 of a cycle (see ``DESIGN.md``): the director plans,
proposers propose in parallel, malformed or invalid proposals are rejected, the critic
forecasts each proposal with the world model, every voter votes in parallel, the vote is
tallied and the supervisor reviews the ranking. Agents may be plain objects (called
directly) or Ray actor handles (called with ``.remote`` and gathered with ``ray.get``):
one code path serves both, so the orchestrator passes actor handles and the tests pass
objects. Every proposal, vote, forecast and outcome ends up in a :class:`Decision`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arc_ray.agents.base import AgentContext
from arc_ray.agents.director import Director
from arc_ray.agents.registry import FIXED_ROLES, applicable
from arc_ray.agents.roster import build_agents
from arc_ray.agents.voting import Ballot, tally
from arc_ray.configgen import ExperimentConfigGenerator
from arc_ray.errors import ConfigValidationError, Violation
from arc_ray.records import (
    Decision,
    HistorySummary,
    Prediction,
    Proposal,
    Strategy,
    StrategyMode,
    Vote,
)
from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)


class CycleDecision(BaseModel):
    """What the collective decided for one cycle."""

    model_config = ConfigDict(extra="forbid")

    cycle_id: int
    strategy: Strategy
    proposals: list[Proposal] = Field(default_factory=list)  # well-formed ones, with forecasts
    votes: list[Vote] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)  # one per proposal (and per failed agent)
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per phase
    decision_time_s: float = 0.0

    @property
    def approved(self) -> list[Decision]:
        """Decisions that run (approved or repaired), in rank order."""
        return sorted((d for d in self.decisions if d.outcome.runs()), key=lambda d: (d.rank or 0, d.experiment_id))


ACTOR_RETRIES = 3  # calls again to an agent whose actor went away with its node, while it restarts
ACTOR_RETRY_WAIT_S = 2.0


class _Call:
    """A call to an agent: finished (value or error) or pending on Ray (with what to call
    again if its actor goes away)."""

    __slots__ = ("ref", "value", "error", "again")

    def __init__(self, ref: Any = None, value: Any = None, error: BaseException | None = None,
                 again: Any = None) -> None:
        self.ref, self.value, self.error, self.again = ref, value, error, again


def _start(agent: Any, method: str, *args: Any) -> _Call:
    """Start ``agent.method(*args)``: ``.remote`` on an actor handle, a direct call otherwise."""
    try:
        fn = getattr(agent, method)
        remote = getattr(fn, "remote", None)
        if remote is not None:
            return _Call(ref=remote(*args), again=lambda: remote(*args))
        return _Call(value=fn(*args))
    except Exception as exc:  # an agent's failure costs its own contribution only
        return _Call(error=exc)


def _finish(calls: list[_Call], timeout_s: float) -> list[_Call]:
    """Wait for pending Ray calls (one deadline for all); each failure stays its own.

    An agent's actor that went away (its node died; Ray restarts it, ``max_restarts``)
    is called again, up to :data:`ACTOR_RETRIES` times :data:`ACTOR_RETRY_WAIT_S` apart
    within the deadline: Ray's own task retries can run out before the actor is back,
    and the cycle would lose that agent's proposals or votes.
    """
    pending = [c for c in calls if c.ref is not None]
    if pending:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        deadline = time.monotonic() + timeout_s
        for c in pending:
            for attempt in range(ACTOR_RETRIES + 1):
                try:
                    c.value, c.error = ray.get(c.ref, timeout=max(deadline - time.monotonic(), 0.0)), None
                    break
                except (ActorUnavailableError, RayActorError) as exc:
                    c.error = exc
                    if attempt == ACTOR_RETRIES or deadline - time.monotonic() < 2 * ACTOR_RETRY_WAIT_S:
                        break
                    logger.warning("an agent's actor is unavailable (%s); calling it again", _short(exc))
                    time.sleep(ACTOR_RETRY_WAIT_S)
                    c.ref = c.again()
                except Exception as exc:
                    c.error = exc
                    break
            c.ref = None
    return calls


def _short(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        text = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    else:
        lines = str(exc).strip().splitlines()
        text = lines[-1] if lines else ""
    return f"{type(exc).__name__}: {text}"[:300]


class Collective:
    """The agents of a study, deciding together.

    Args:
        study: the study.
        agents: name → agent, a plain object or a Ray actor handle. Names ``director``
            and ``supervisor`` are required roles; ``critic`` is the world-model voter;
            every other name is a proposer (asked to propose when the director's quota
            for it is above zero) and every agent but the supervisor votes. Default:
            :func:`~arc_ray.agents.roster.build_agents` for the study.
        timeout_s: longest wait for any phase's actor calls; an agent that does not
            answer in time loses that phase's contribution.

    Raises:
        ConfigValidationError: a required role is missing.
    """

    def __init__(self, study: StudyConfig, agents: Mapping[str, Any] | None = None,
                 timeout_s: float = 300.0) -> None:
        self.study = study
        self.agents = dict(agents) if agents is not None else build_agents(study)
        missing = [r for r in ("director", "supervisor") if r not in self.agents]
        if missing:
            raise ConfigValidationError([Violation("agents", sorted(self.agents), f"missing the {r!r} role")
                                         for r in missing])
        self.timeout_s = timeout_s

    @property
    def proposer_names(self) -> list[str]:
        return [n for n in self.agents if n not in FIXED_ROLES]

    # -------------------------------------------------------------------- decide

    def decide(self, cycle_id: int, summary: HistorySummary, trials: pa.Table | None = None) -> CycleDecision:
        """Plan, propose, forecast, vote, tally and supervise one cycle.

        Args:
            cycle_id: the cycle being decided (names the experiment ids).
            summary: the historian's summary.
            trials: the historian's trials table (empty when None).

        Returns:
            the strategy, the well-formed proposals with forecasts, every vote, and a
            decision for every proposal; :attr:`CycleDecision.approved` is what runs.
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        trials = trials if trials is not None else pa.table({})

        strategy = self._plan(summary, cycle_id)
        timings["plan"] = time.perf_counter() - t0
        ctx = AgentContext(study=self.study, cycle_id=cycle_id, summary=summary, strategy=strategy, trials=trials)
        ctx.history()  # computed once here and carried to every agent, like the generator
        ctx.config_generator()
        decisions: list[Decision] = []

        t = time.perf_counter()
        proposals = self._proposals(ctx, strategy, decisions)
        timings["propose"] = time.perf_counter() - t

        t = time.perf_counter()
        proposals = self._forecast(proposals, ctx)
        timings["forecast"] = time.perf_counter() - t

        t = time.perf_counter()
        votes = self._votes(proposals, ctx)
        result = tally(proposals, votes, self.study.voting, cycle_id)
        decisions.extend(result.rejected)
        timings["vote"] = time.perf_counter() - t

        t = time.perf_counter()
        decisions[:0] = self._review(result.ranked, ctx)
        timings["supervise"] = time.perf_counter() - t
        elapsed = time.perf_counter() - t0
        n_run = sum(d.outcome.runs() for d in decisions)
        logger.info("cycle %d decided in %.3fs: %s, %d proposals, %d votes, %d to run",
                    cycle_id, elapsed, strategy.mode.value, len(proposals), len(votes), n_run)
        return CycleDecision(cycle_id=cycle_id, strategy=strategy, proposals=proposals, votes=votes,
                             decisions=decisions, timings=timings, decision_time_s=elapsed)

    # -------------------------------------------------------------------- phases

    def _plan(self, summary: HistorySummary, cycle_id: int) -> Strategy:
        call = _finish([_start(self.agents["director"], "plan", summary)], self.timeout_s)[0]
        value = call.value
        if call.error is None and isinstance(value, Strategy):
            return value.model_copy(update={"cycle_id": cycle_id})
        why = _short(call.error) if call.error else f"returned {type(value).__name__}, not a Strategy"
        logger.error("director failed (%s); exploring with the default quotas", why)
        quotas = Director(self.study, applicable=applicable(self.study)).quotas(StrategyMode.EXPLORE)
        return Strategy(mode=StrategyMode.EXPLORE, reason=f"director failed ({why}); exploring",
                        quotas=quotas, cycle_id=cycle_id)

    def _proposals(self, ctx: AgentContext, strategy: Strategy, decisions: list[Decision]) -> list[Proposal]:
        names = [n for n in self.proposer_names if strategy.quotas.get(n, 0) > 0]
        unknown = sorted(set(strategy.quotas) - set(self.proposer_names))
        if unknown:
            logger.warning("the strategy gives quotas to agents the collective lacks: %s", unknown)
        ctxs = {n: ctx.model_copy(update={"quota": strategy.quotas[n]}) for n in names}
        calls = _finish([_start(self.agents[n], "propose", ctxs[n]) for n in names], self.timeout_s)
        gen = ctx.config_generator()
        run_ids = set(ctx.history().ids)
        used: set[str] = set()
        accepted: list[Proposal] = []
        for name, call in zip(names, calls):
            accepted += self._accept(name, call, strategy.quotas[name], ctx, gen, run_ids, used, decisions)
        return accepted

    def _accept(self, name: str, call: _Call, quota: int, ctx: AgentContext, gen: ExperimentConfigGenerator,
                run_ids: set[str], used: set[str], decisions: list[Decision]) -> list[Proposal]:
        """Keep a proposer's well-formed, valid proposals; record a rejection for the rest."""
        cycle = ctx.cycle_id

        def reject(eid: str, reason: str, proposal: Proposal | None = None, by: str = "collective") -> None:
            decisions.append(Decision.rejected(eid, cycle_id=cycle, decided_by=by, reason=reason,
                                               proposal=proposal))

        prefix = f"c{cycle:04d}-{name}"[:56]
        if call.error is not None:
            logger.error("proposer %s failed: %s", name, _short(call.error))
            reject(f"{prefix}-error", f"proposer {name} raised {_short(call.error)}; its proposals are lost")
            return []
        if not isinstance(call.value, (list, tuple)):
            reject(f"{prefix}-garbage", f"proposer {name} returned {type(call.value).__name__}, not a list of proposals")
            return []
        out: list[Proposal] = []
        for k, item in enumerate(call.value, start=1):
            bad_id = f"{prefix}-bad{k:02d}"
            try:
                p = item if isinstance(item, Proposal) else Proposal.model_validate(item)
            except (ValidationError, TypeError) as exc:
                reject(bad_id, f"proposer {name} returned a malformed proposal ({type(item).__name__}): "
                               f"{_short(exc)}")
                continue
            p = p.model_copy(update={"proposer": name, "cycle_id": cycle})
            if k > quota:
                reject(p.experiment_id if p.experiment_id not in used else bad_id,
                       f"over {name}'s quota of {quota} this cycle", p)
                continue
            if p.experiment_id in used or p.experiment_id in run_ids:
                reject(bad_id, f"experiment id {p.experiment_id!r} is already used in this study", p)
                continue
            used.add(p.experiment_id)
            try:
                gen.validate(p.changes)
            except ConfigValidationError as exc:
                reject(p.experiment_id, "invalid config: " + "; ".join(str(v) for v in exc.violations), p,
                       by="configgen")
                continue
            except Exception as exc:  # values the validators cannot even compare
                reject(p.experiment_id, f"invalid config: {_short(exc)}", p, by="configgen")
                continue
            out.append(p)
        return out

    def _forecast(self, proposals: list[Proposal], ctx: AgentContext) -> list[Proposal]:
        critic = self.agents.get("critic")
        if critic is None or not proposals:
            return proposals
        call = _finish([_start(critic, "assess", proposals, ctx)], self.timeout_s)[0]
        preds = call.value
        if call.error is not None or not isinstance(preds, list) or len(preds) != len(proposals) \
                or not all(isinstance(p, Prediction) for p in preds):
            why = _short(call.error) if call.error else "a malformed forecast"
            logger.error("critic could not forecast the proposals (%s); voting without forecasts", why)
            return proposals
        return [p.model_copy(update={"predicted": pred}) for p, pred in zip(proposals, preds)]

    def _votes(self, proposals: list[Proposal], ctx: AgentContext) -> list[Vote]:
        if not proposals:
            return []
        voters = [n for n in self.agents if n != "supervisor"]
        calls = _finish([_start(self.agents[n], "vote", proposals, ctx) for n in voters], self.timeout_s)
        author = {p.experiment_id: p.proposer for p in proposals}
        votes: list[Vote] = []
        for name, call in zip(voters, calls):
            if call.error is not None or not isinstance(call.value, (list, tuple)):
                why = _short(call.error) if call.error else f"returned {type(call.value).__name__}"
                logger.error("voter %s failed (%s); its votes are lost this cycle", name, why)
                continue
            for item in call.value:
                try:
                    v = item if isinstance(item, Vote) else Vote.model_validate(item)
                except (ValidationError, TypeError):
                    logger.warning("voter %s returned a malformed vote: %r", name, item)
                    continue
                if v.experiment_id not in author or author[v.experiment_id] == name:
                    continue  # unknown proposal, or a vote on its own
                votes.append(v.model_copy(update={"agent": name}))
        return votes

    def _review(self, ranked: list[Ballot], ctx: AgentContext) -> list[Decision]:
        if not ranked:
            return []
        call = _finish([_start(self.agents["supervisor"], "review", ranked, ctx)], self.timeout_s)[0]
        by_id = {b.proposal.experiment_id: b for b in ranked}
        got: dict[str, Decision] = {}
        if call.error is None and isinstance(call.value, list):
            for d in call.value:
                if not isinstance(d, Decision) or d.experiment_id not in by_id or d.experiment_id in got:
                    continue
                if d.outcome.runs() and d.config is None:
                    logger.error("supervisor approved %s without a config; vetoed", d.experiment_id)
                    continue
                got[d.experiment_id] = d
        else:
            why = _short(call.error) if call.error else f"returned {type(call.value).__name__}"
            logger.error("supervisor failed (%s); nothing runs unsupervised", why)
        out = []
        for eid, b in by_id.items():
            d = got.get(eid)
            if d is None:
                reason = ("supervisor failed: " + (_short(call.error) if call.error else "no decision returned"))
                d = Decision.vetoed(b.proposal, cycle_id=ctx.cycle_id, decided_by="collective", reason=reason,
                                    votes=b.votes, weighted_score=b.weighted_score, rank=b.rank)
            out.append(d)
        return out
