"""The explorer: space-filling proposals far from everything already run."""

from __future__ import annotations

import logging
import math
import numpy as np
from scipy.stats import qmc

from arc_ray.agents._history import nearest_distance
from arc_ray.agents.base import AgentContext, Proposer, world_model_for
from arc_ray.agents.registry import register_proposer
from arc_ray.records import Proposal, ProposalType
from arc_ray.space import flatten_config

logger = logging.getLogger(__name__)

CANDIDATES_PER_PROPOSAL = 32  # Sobol candidates drawn per proposal wanted


def novelty_score(d: float, min_distance: float) -> float:
    """0.5 at ``min_distance`` from the nearest run config, 1 at five times that, 0 on top of it."""
    if not math.isfinite(d):
        return 1.0
    md = max(min_distance, 1e-6)
    return float(np.clip(0.5 + (d - md) / (8 * md), 0.0, 1.0))


@register_proposer("explorer")
class ExplorerProposer(Proposer):
    """Sobol (scrambled, seeded by cycle) candidates in the unit cube of the searched
    parameters; keeps only those at least ``proposers.min_distance`` (RMS unit-cube
    distance) from every config already run and from each other, then picks either the
    most isolated ones (``proposers.explorer: sobol``, greedy maximin) or those the world
    model is least sure about (``uncertainty``).

    Votes by novelty: approves proposals at least ``min_distance`` from anything run.
    """

    name = "explorer"
    proposal_type = ProposalType.EXPLORATION

    def propose(self, ctx: AgentContext) -> list[Proposal]:
        n, names = ctx.quota, self.searched(ctx)
        if n <= 0 or not names:
            return []
        view = ctx.history()
        axes = view.axes(self.study.proposers.exclude)
        m = max(64, CANDIDATES_PER_PROPOSAL * n)
        sobol = qmc.Sobol(d=len(names), scramble=True, seed=self.study.seed * 7919 + ctx.cycle_id)
        raw = sobol.random_base2(int(math.ceil(math.log2(m))))
        flats = [self.study.search_space.from_unit_row(names, row) for row in raw]
        # snap to the values the configs will really take (ints, choices) before measuring distance
        points = np.array([view.unit({**view.baseline_flat, **f})[axes] for f in flats])
        run = view.X[:, axes] if view.n else np.empty((0, len(axes)))
        md = self.study.proposers.min_distance
        d_run = nearest_distance(points, run)
        keep = np.flatnonzero(d_run >= md)
        if len(keep) == 0:
            logger.info("explorer: every candidate lies within %.3g of a run config", md)
            return []
        std = None
        if self.study.proposers.explorer == "uncertainty" and view.n_completed >= 3:
            wm = world_model_for(ctx, seed=self.study.seed)
            std = np.array([p.std for p in wm.predict([{**view.baseline_flat, **flats[i]} for i in keep])])
        chosen: list[int] = []
        picked_points = np.empty((0, len(axes)))
        for _ in range(n):
            if len(chosen) >= len(keep):
                break
            d_pick = nearest_distance(points[keep], picked_points)
            ok = d_pick >= md
            if not ok.any():
                break
            if std is not None:
                key = np.where(ok, std, -np.inf)
            else:
                key = np.where(ok, np.minimum(d_run[keep], d_pick), -np.inf)
            j = int(np.argmax(key))
            chosen.append(int(keep[j]))
            picked_points = np.vstack([picked_points, points[keep[j]]])
        proposals = []
        for i in chosen:
            flat, notes = self.admissible(flats[i], ctx)
            if flat is None:
                continue
            k = len(proposals) + 1
            dist = "nothing run yet" if not np.isfinite(d_run[i]) else f"{d_run[i]:.3f} from the nearest run config"
            how = (f"world-model std {std[list(keep).index(i)]:.3g}, the highest of {len(keep)} candidates"
                   if std is not None else f"the most isolated of {len(keep)} Sobol candidates")
            proposals.append(self.proposal_of(ctx, k, flat, notes, f"space filling: {how}; {dist} (min {md:g})"))
        return proposals

    def goodness(self, proposals: list[Proposal], ctx: AgentContext) -> list[tuple[float, str] | None]:
        view = ctx.history()
        points = np.array([view.unit(flatten_config(p.changes)) for p in proposals])
        d = nearest_distance(points, view.X)
        md = self.study.proposers.min_distance
        out: list[tuple[float, str] | None] = []
        for di in d:
            shown = "nothing run yet" if not np.isfinite(di) else f"{di:.3f} from the nearest run config"
            out.append((novelty_score(float(di), md), f"novelty: {shown}"))
        return out
