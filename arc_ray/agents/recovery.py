"""The recovery proposer: safer variants and local moves around the best, or a baseline restart."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from arc_ray.agents._constraints import BATCH_LEAVES, smaller_values
from arc_ray.agents._history import nearest_distance
from arc_ray.agents.base import AgentContext, Proposer, describe_config
from arc_ray.agents.registry import register_proposer
from arc_ray.records import Proposal, ProposalType, RiskLevel, StrategyMode
from arc_ray.space import flatten_config

logger = logging.getLogger(__name__)

LR_LEAVES = ("lr", "learning_rate")
SAFER_LR_FACTOR = 0.3  # "safer" divides the learning rate by about three
PERTURB_SIGMA = 0.08  # local moves: unit-cube standard deviation per numeric axis
PERTURB_SWITCH = 0.15  # local moves: chance of switching a categorical to a neighbour


def _find(names: list[str], leaves: tuple[str, ...]) -> str | None:
    return next((n for n in names if n.rpartition(".")[2].lower() in leaves), None)


@register_proposer("recovery")
class RecoveryProposer(Proposer):
    """Used in recover mode (the director gives it no quota otherwise). Cycles through:

    1. **safer**: the best config (the baseline when nothing completed) with the learning
       rate divided by ~3 and the next smaller batch size — the usual cures for
       divergence and out-of-memory;
    2. **local**: small random moves around the best in the unit cube;
    3. **restart**: the baseline itself, or a small move around it once it has run.

    Votes by safety: how much nearer a proposal lies to past successes than to past
    failures; abstains while nothing has failed.
    """

    name = "recovery"
    proposal_type = ProposalType.RECOVERY

    def propose(self, ctx: AgentContext) -> list[Proposal]:
        n, names = ctx.quota, self.searched(ctx)
        if n <= 0 or not names:
            return []
        view = ctx.history()
        space = self.study.search_space
        best = view.best_index()
        base = {k: v for k, v in view.baseline_flat.items() if k in space}
        start = view.flat_config(best) if best is not None else dict(base)
        origin = f"best config {view.ids[best]} ({self.study.metric} {view.values[best]:.4g})" \
            if best is not None else "the baseline (nothing has completed)"
        rng = np.random.default_rng([self.study.seed, ctx.cycle_id, 23])
        tol = self.study.supervisor.same_config_distance
        plans = ["safer", "local", "restart"]
        proposals: list[Proposal] = []
        chosen_points: list[np.ndarray] = []
        for attempt in range(4 * n):
            if len(proposals) >= n:
                break
            plan = plans[attempt % len(plans)] if attempt < len(plans) else "local"
            if plan == "safer":
                flat, why = self._safer(start, names)
            elif plan == "restart":
                flat, why = dict(base), "restart from the baseline"
            else:
                flat, why = self._perturb(start, names, rng), f"local move around {origin}"
            if flat is None:
                continue
            def ran(flat: dict[str, Any]) -> bool:
                return view.ran_near(view.unit(flat), tol, chosen_points)

            if plan == "restart" and ran(flat):  # the baseline already ran: nudge it instead
                flat, why = self._perturb(base, names, rng), "local move around the baseline (which has run)"
            flat, notes = self.admissible(flat, ctx)
            if flat is None or ran(flat):
                continue
            if notes:
                why += "; " + ", ".join(notes)
            x = view.unit(flat)
            chosen_points.append(x)
            k = len(proposals) + 1
            rationale = f"recovery ({plan}): {why}; from {origin}: {describe_config(flat, names)}"
            risk = RiskLevel.LOW if plan in ("safer", "restart") else RiskLevel.MEDIUM
            mode = ctx.strategy.mode.value if ctx.strategy else StrategyMode.RECOVER.value
            proposals.append(self.proposal(ctx, k, self.changes_from(flat, ctx), f"[{mode}] {rationale}",
                                           risk_level=risk))
        return proposals

    def _safer(self, start: dict[str, Any], names: list[str]) -> tuple[dict[str, Any] | None, str]:
        space = self.study.search_space
        flat, notes = dict(start), []
        lr = _find(names, LR_LEAVES)
        if lr and isinstance(flat.get(lr), (int, float)):
            spec = space[lr]
            new = max(float(flat[lr]) * SAFER_LR_FACTOR, float(spec.low))  # type: ignore[arg-type]
            good, problem = spec.check(int(new) if spec.type == "int" else new)
            if not problem and good != flat[lr]:
                notes.append(f"{lr} {flat[lr]:.3g} → {good:.3g}")
                flat[lr] = good
        batch = _find(names, BATCH_LEAVES)
        if batch and flat.get(batch) is not None:
            smaller = smaller_values(space[batch], flat[batch])
            if smaller:
                notes.append(f"{batch} {flat[batch]} → {smaller[0]}")
                flat[batch] = smaller[0]
        if not notes:
            return None, ""
        return flat, "safer settings: " + ", ".join(notes)

    def _perturb(self, centre: dict[str, Any], names: list[str], rng: np.random.Generator) -> dict[str, Any]:
        space = self.study.search_space
        flat = dict(centre)
        for name in names:
            spec = space[name]
            if spec.type in ("float", "int"):
                u = spec.to_unit(flat[name]) + rng.normal(0.0, PERTURB_SIGMA)
                flat[name] = spec.from_unit(float(np.clip(u, 0.0, 1.0)))
            elif rng.random() < PERTURB_SWITCH:
                choices = spec.values
                if len(choices) > 1:
                    i = choices.index(flat[name]) if flat[name] in choices else 0
                    j = min(max(i + (1 if rng.random() < 0.5 else -1), 0), len(choices) - 1)
                    flat[name] = choices[j if j != i else (i + 1) % len(choices)]
        return flat

    def goodness(self, proposals: list[Proposal], ctx: AgentContext) -> list[tuple[float, str] | None]:
        view = ctx.history()
        if view.n_failed == 0:
            return [None] * len(proposals)
        points = np.array([view.unit(flatten_config(p.changes)) for p in proposals])
        d_fail = nearest_distance(points, view.X[view.failed])
        d_ok = nearest_distance(points, view.X[view.completed])
        out: list[tuple[float, str] | None] = []
        for f, s in zip(d_fail, d_ok):
            if not np.isfinite(s):
                score = float(min(1.0, f / 0.25))  # only failures known: far from them is safer
            else:
                score = float(f / (f + s + 1e-12))
            out.append((score, f"safety: {f:.3f} from the nearest failure, "
                               f"{s:.3f} from the nearest success"))
        return out
