"""The vote tally: weights, quorum, ranking, ties; and the per-cycle cap it no longer holds."""

from __future__ import annotations

from arc_ray.agents import tally
from arc_ray.records import DecisionOutcome, Proposal, Vote
from arc_ray.study import VotingSettings

SETTINGS = VotingSettings(weights={"critic": 2.0, "director": 1.0}, default_weight=1.0, quorum=0.5)


def _p(eid: str, proposer: str = "bayesian") -> Proposal:
    return Proposal(experiment_id=eid, changes={}, proposer=proposer)


def _v(agent: str, eid: str, approve: bool, score: float, weight: float = 1.0) -> Vote:
    return Vote(agent=agent, experiment_id=eid, approve=approve, score=score, weight=weight)


def test_weighted_approval_against_quorum():
    props = [_p("a"), _p("b")]
    votes = [
        # a: critic (2) for, director (1) and explorer (1) against → 2/4 = 0.5 ≥ quorum
        _v("critic", "a", True, 0.9), _v("director", "a", False, 0.2), _v("explorer", "a", False, 0.3),
        # b: critic against, two for → 2/4 = 0.5 as well
        _v("critic", "b", False, 0.1), _v("director", "b", True, 0.8), _v("explorer", "b", True, 0.9),
    ]
    t = tally(props, votes, SETTINGS, cycle_id=3)
    assert [b.proposal.experiment_id for b in t.ranked] == ["a", "b"]
    a = t.ranked[0]
    assert a.approval == 0.5 and abs(a.weighted_score - (2 * 0.9 + 0.2 + 0.3) / 4) < 1e-12
    assert a.rank == 1 and {v.weight for v in a.votes} == {2.0, 1.0}
    strict = SETTINGS.model_copy(update={"quorum": 0.6})
    t2 = tally(props, votes, strict, cycle_id=3)
    assert t2.ranked == [] and len(t2.rejected) == 2
    rej = t2.rejected[0]
    assert rej.outcome == DecisionOutcome.REJECTED and rej.decided_by == "vote" and rej.cycle_id == 3
    assert "quorum 0.60 not reached" in rej.reason and "for: critic" in rej.reason
    assert len(rej.votes) == 3


def test_ranking_ties_break_by_id():
    props = [_p(e) for e in ("z", "m", "a", "q")]
    votes = [_v("critic", e, True, 0.7) for e in ("z", "m", "a")] + [_v("critic", "q", True, 0.9)]
    t = tally(list(reversed(props)), votes, SETTINGS, cycle_id=0)
    assert [b.proposal.experiment_id for b in t.ranked] == ["q", "a", "m", "z"]
    assert tally(props, votes, SETTINGS, 0).ranked[1].proposal.experiment_id == "a"  # same order either way


def test_self_weights_duplicates_and_unknown_votes_do_not_count():
    props = [_p("a")]
    votes = [
        _v("explorer", "a", True, 1.0, weight=100.0),  # claims a weight: ignored (explorer weighs 1)
        _v("explorer", "a", True, 1.0),  # a second vote from the same agent: ignored
        _v("critic", "a", False, 0.0),
        _v("critic", "nope", True, 1.0),  # a vote on an unknown proposal
    ]
    t = tally(props, votes, SETTINGS, 0)
    assert t.ranked == [] and len(t.rejected) == 1
    assert len(t.rejected[0].votes) == 2 and abs(t.rejected[0].weighted_score - 1 / 3) < 1e-12


def test_no_votes_is_rejected_with_the_reason():
    t = tally([_p("lonely")], [], SETTINGS, 7)
    assert t.ranked == [] and "no (weighted) votes" in t.rejected[0].reason
    zero = SETTINGS.model_copy(update={"weights": {"critic": 0.0}})
    t = tally([_p("a")], [_v("critic", "a", True, 1.0)], zero, 7)
    assert t.ranked == [] and t.rejected[0].weighted_score is not None


def test_voting_max_approved_is_read_as_trials_per_cycle_with_a_warning(tmp_path, caplog):
    import warnings

    import pytest

    from arc_ray.study import StudyConfig

    base = {"name": "old", "trainable": "trainables.toy:objective", "metric": "score",
            "baseline": {"x": 0.0}, "search_space": {"x": {"type": "float", "low": -1, "high": 1}},
            "storage": str(tmp_path)}
    with pytest.warns(DeprecationWarning, match="voting.max_approved is deprecated"):
        old = StudyConfig.from_dict({**base, "voting": {"max_approved": 2, "quorum": 0.6}})
    assert old.budget.trials_per_cycle == 2 and old.voting.quorum == 0.6
    assert "voting.max_approved is deprecated" in caplog.text
    with pytest.warns(DeprecationWarning):  # both set: the smaller cap bound before, and still does
        both = StudyConfig.from_dict({**base, "voting": {"max_approved": 5}, "budget": {"trials_per_cycle": 3}})
    assert both.budget.trials_per_cycle == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert StudyConfig.from_dict(base).budget.trials_per_cycle == 4
    assert not hasattr(VotingSettings(), "max_approved")
