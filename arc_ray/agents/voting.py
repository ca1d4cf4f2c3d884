"""The democratic vote: weighted approval against a quorum, ranked by weighted score.

How many of the ranked proposals may run is not the vote's to say: the supervisor
applies ``budget.trials_per_cycle`` with the study's other budgets.
"""

from __future__ import annotations

from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field

from arc_ray.records import Decision, Proposal, Vote
from arc_ray.study import VotingSettings


class Ballot(BaseModel):
    """One proposal's votes, summed up."""

    model_config = ConfigDict(extra="forbid")

    proposal: Proposal
    votes: list[Vote] = Field(default_factory=list)
    approval: float = 0.0  # weighted share of approving votes, in [0, 1]
    weighted_score: float = 0.0  # weighted mean of the votes' scores, in [0, 1]
    rank: int | None = None  # 1 = best, among proposals that reached the quorum

    def summary(self) -> str:
        yes = [v.agent for v in self.votes if v.approve]
        no = [v.agent for v in self.votes if not v.approve]
        return (f"weighted approval {self.approval:.2f}, score {self.weighted_score:.3f} "
                f"(for: {', '.join(yes) or 'none'}; against: {', '.join(no) or 'none'})")


class Tally(BaseModel):
    """The outcome of a vote: proposals that reached the quorum in rank order, and the rest."""

    model_config = ConfigDict(extra="forbid")

    ranked: list[Ballot] = Field(default_factory=list)  # quorum reached, best first
    rejected: list[Decision] = Field(default_factory=list)  # quorum missed, or no votes


def weight_of(agent: str, settings: VotingSettings) -> float:
    return float(settings.weights.get(agent, settings.default_weight))


def tally(proposals: Iterable[Proposal], votes: Iterable[Vote], settings: VotingSettings,
          cycle_id: int) -> Tally:
    """Count the votes.

    Each vote weighs ``settings.weights[agent]`` (``default_weight`` for agents not
    named); a vote's own ``weight`` field is ignored, so no agent can weigh itself. A
    proposal is approved when the weighted share of approving votes is at least
    ``quorum``; approved proposals are ranked by weighted mean score, then approval,
    then ``experiment_id`` (so ties break the same way on every run). Only the first
    vote of an agent on a proposal counts; votes on unknown proposals are ignored.

    Returns:
        the ranking (all proposals that reached the quorum) and a ``rejected`` decision
        for each of the others.
    """
    by_id: dict[str, Ballot] = {}
    for p in proposals:
        by_id.setdefault(p.experiment_id, Ballot(proposal=p))
    seen: set[tuple[str, str]] = set()
    for v in votes:
        ballot = by_id.get(v.experiment_id)
        if ballot is None or (v.agent, v.experiment_id) in seen:
            continue
        seen.add((v.agent, v.experiment_id))
        ballot.votes.append(v.model_copy(update={"weight": weight_of(v.agent, settings)}))
    ranked, rejected = [], []
    for ballot in by_id.values():
        total = sum(v.weight for v in ballot.votes)
        if total <= 0:
            rejected.append(_reject(ballot, cycle_id, "no (weighted) votes were cast on it"))
            continue
        ballot.approval = sum(v.weight for v in ballot.votes if v.approve) / total
        ballot.weighted_score = sum(v.weight * v.score for v in ballot.votes) / total
        if ballot.approval + 1e-12 >= settings.quorum:
            ranked.append(ballot)
        else:
            rejected.append(_reject(ballot, cycle_id, f"quorum {settings.quorum:.2f} not reached: {ballot.summary()}"))
    ranked.sort(key=lambda b: (-round(b.weighted_score, 12), -round(b.approval, 12), b.proposal.experiment_id))
    for i, ballot in enumerate(ranked, start=1):
        ballot.rank = i
    return Tally(ranked=ranked, rejected=rejected)


def _reject(ballot: Ballot, cycle_id: int, reason: str) -> Decision:
    return Decision.rejected(ballot.proposal.experiment_id, cycle_id=cycle_id, decided_by="vote",
                             reason=reason, proposal=ballot.proposal, votes=ballot.votes,
                             weighted_score=ballot.weighted_score if ballot.votes else None)
