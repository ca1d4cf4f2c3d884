"""The surrogate proposer: maximises the world model's expected improvement over the whole space.

The critic only re-ranks what other proposers sampled; on smooth responses a GP's own
acquisition, maximised, finds the optimum far sooner (Optuna's GPSampler beat the
collective there by orders of magnitude in ``bench_search``). This proposer fits the
world model (Matern-5/2 ARD GP with a failure estimate) on the history, scores a pool of
candidates — scrambled Sobol points over the searched parameters, and Gaussian moves
around the best trials (a trust region: small and larger steps); in the director's
exploit cycles the trust region alone, since a GP fitted on a few trials extrapolates
expected improvement to far corners along parameters it has not learned yet — by expected
improvement times the chance the trial does not fail (none over the risk cap, which the
critic and the supervisor refuse), and picks the batch greedily with local penalisation:
after each pick, candidates near it lose acquisition, so a batch spreads over several
promising spots instead of piling onto one (no refit needed, unlike a Kriging
believer); trials still in flight (rolling decisions) damp their neighbours the same way.
Once the history is rich (:data:`RICH_HISTORY` completed trials per searched parameter),
all of the batch's slots but one (at most :data:`POLISH_MAX`) go to polish: EI
maximised over fine moves around the best trial, the picks a hair apart, so a converging
search closes in on its optimum instead of spending most of each batch on far corners.
No pick lies within the supervisor's duplicate tolerance of a config run, in flight or
picked before it: the supervisor would veto it, and its slot would go to a proposal
ranked lower.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Callable

import numpy as np
from scipy.stats import norm, qmc

from arc_ray.agents._history import rms_distance
from arc_ray.agents.base import AgentContext, Proposer, risk_cap, world_model_for
from arc_ray.agents.registry import register_proposer
from arc_ray.historian.schema import EXPERIMENT_ID
from arc_ray.records import Proposal, ProposalType, StrategyMode
from arc_ray.space import flatten_config

if TYPE_CHECKING:
    from arc_ray.study import StudyConfig
    from arc_ray.world_model import WorldModel

logger = logging.getLogger(__name__)

SOBOL_CANDIDATES = 256  # space-wide candidates per cycle (a power of two)
LOCAL_CANDIDATES = 32  # moves around each of the best trials, per step size
LOCAL_STEPS = (0.03, 0.1, 0.25)  # trust-region step sizes, in unit-cube units per axis
LOCAL_CENTRES = 4  # best completed trials moved around
# Then moves this fine around the best-scoring candidates. The two finest steps pay only
# since the world model resolves small differences (its noise floor, MIN_NOISE): at 100
# evaluations in bench_search (batches of 4, the floor at 1e-6 throughout), 71 runs
# better and 47 worse than without them; before the floor fell, even (53, 54).
REFINE_STEPS = (0.02, 0.006, 0.002, 0.0006, 0.0002)
REFINE_CENTRES = 4  # candidates refined per step
REFINE_CANDIDATES = 8  # moves per refined candidate and step
PENALTY_RADIUS = 0.08  # RMS unit-cube distance within which a pick damps its neighbours
NEIGHBOUR_STEPS = (0.04, 0.15)  # one-parameter moves of the best config in start-up: |step| range, unit-cube units
MIN_OBSERVATIONS = 4  # completed trials before the model is worth maximising (and two per searched axis)
FIT_SIZE = 300  # most trials the GP conditions on (best quarter plus the most recent)
REFIT_GROWTH = 0.05  # refit once the history grew by this share (every cycle while small)
# Once the history holds RICH_HISTORY completed trials per searched parameter, the world
# model is fitted on enough data to be trusted near its optimum: the director gives the
# surrogate more of every mode's proposals (``director.RICH_SURROGATE``), and all of the
# batch's slots (``budget.trials_per_cycle``) but one, at most POLISH_MAX, go to
# polish: EI maximised over moves of POLISH_STEPS around the best trial, refined down
# to the last of POLISH_REFINE, the picks POLISH_RADIUS apart. The surrogate's other
# picks (first) stay the acquisition's maximum over the whole pool, which often
# explores. Optuna's GPSampler batches look the same: its first ask maximises log EI
# alone, the asks with trials pending land within a hair of its best. In bench_search (batches of 4, budgets
# 20/40/100, 5 seeds) 165 runs better and 86 worse than one pool for every pick (at 100
# evaluations 75 and 49; cells vs GP 47 → 53 of 81).
RICH_HISTORY = 5
POLISH_STEPS = (0.01, 0.003, 0.001, 0.0003)  # moves around the best trial, unit-cube units per axis
POLISH_MOVES = 32  # moves per polish step
POLISH_REFINE = (0.003, 0.001, 0.0003, 0.0001)
# At most POLISH_MAX polish picks a cycle: with batches of 8 (10 seeds, budgets
# 20/40/100) seven polish picks a cycle sat on CV-accuracy plateaus (svm_digits: ARC worse
# than random at 40 and 100); capped, per seed vs TPE / GP / random 577-182, 489-277,
# 670-101 (567-201, 472-301, 654-114 before), worse than random in 4 cells (6), run by run
# even (186 better, 183 worse). Batches of 4 polish 3 either way.
POLISH_MAX = 3
POLISH_RADIUS = 0.01  # RMS distance within which a polish pick damps the other polish candidates


@register_proposer("surrogate")
class SurrogateProposer(Proposer):
    """Proposals that maximise the world model's expected improvement (see the module).

    Until :data:`MIN_OBSERVATIONS` trials, and two per searched parameter, completed (a GP
    fitted on fewer in many dimensions proposed worse than random in bench_search), it
    proposes a start-up design instead: the study's baseline while no trial has run it
    (the reference every later result is compared with; the director votes it into the
    first cycle), then one-parameter moves of the best config when the study declared its
    baseline (a user's start; with the director's early exploit, the demo study's best
    improved after its first cycle in 3 of 3 seeds, 0 of 3 before), else scrambled Sobol
    points. Abstains from the vote (the critic already scores every proposal with
    the same model).
    """

    name = "surrogate"
    proposal_type = ProposalType.HYPERPARAMETER_TUNING

    def __init__(self, study, name: str | None = None) -> None:
        super().__init__(study, name)
        self._model: WorldModel | None = None
        self._fitted_on: tuple[int, str | None] = (0, None)

    def _world_model(self, ctx: AgentContext) -> "WorldModel":
        t = ctx.trials
        n = t.num_rows
        first = str(t.column(EXPERIMENT_ID)[0]) if n and EXPERIMENT_ID in t.column_names else None
        rows, was_first = self._fitted_on
        if self._model is None or first != was_first or n < rows or n - rows >= max(1.0, REFIT_GROWTH * rows):
            self._model = world_model_for(ctx, seed=self.study.seed, max_fit_size=FIT_SIZE,
                                          n_restarts=0 if n > 100 else 2)
            self._fitted_on = (n, first)
        return self._model

    def _startup(self, ctx: AgentContext, n: int, names: list[str], need: int) -> list[Proposal]:
        """Before the model is worth maximising: scrambled Sobol points (its start-up design),
        so the surrogate's share of the cycle is not lost to the vote."""
        view = ctx.history()
        space = self.study.search_space
        rng = np.random.default_rng([self.study.seed, ctx.cycle_id, 41])
        proposals: list[Proposal] = []
        if not view.baseline_ran(self.study.supervisor.same_config_distance) \
                and all(name in view.baseline_flat for name in names):
            # the centre of the design: the study's baseline, the reference every later
            # result is compared with (the director votes it into the first cycle)
            flat, notes = self.admissible({name: view.baseline_flat[name] for name in names}, ctx)
            if flat is not None:
                proposals.append(self.proposal_of(ctx, 1, flat, notes, (
                    "start-up design: the study's baseline, not run yet: the reference every later "
                    "result is compared with")))
        if declared_baseline(self.study, names) and view.best_index() is not None:
            proposals += self._neighbours(ctx, n - len(proposals), names, need, rng, first=len(proposals) + 1)
        units = qmc.Sobol(d=len(names), scramble=True, seed=int(rng.integers(2**31))).random_base2(
            max(1, math.ceil(math.log2(4 * n))))
        for row in units:
            if len(proposals) >= n:
                break
            flat, notes = self.admissible(space.from_unit_row(names, row), ctx)
            if flat is None:
                continue
            proposals.append(self.proposal_of(ctx, len(proposals) + 1, flat, notes, (
                f"start-up design (Sobol), {view.n_completed} of the {need} completed trials the "
                "world model needs before it is maximised")))
        return proposals

    def _neighbours(self, ctx: AgentContext, n: int, names: list[str], need: int,
                    rng: np.random.Generator, first: int = 1) -> list[Proposal]:
        """Up to ``n`` configs that change one parameter of the best trial each: a
        categorical or bool to another value, a number by 4-15 % of its (log) range either
        way (an int by at least one). The parameters least often changed alone from the
        best come first, none twice; no config already run."""
        view = ctx.history()
        space = self.study.search_space
        best = view.best_index()
        assert best is not None
        start = view.flat_config(best)
        seen = {tuple(row) for row in view.X.round(9)}
        # the parameters least often varied alone around the best first (a coordinate
        # search), ties in random order
        moved = np.abs(view.X - view.unit(start)) > 1e-9
        alone = moved.sum(axis=1) == 1
        tries = {name: int(moved[alone, view.names.index(name)].sum()) for name in names}
        order = sorted(rng.permutation(names), key=lambda name: tries[name])
        proposals: list[Proposal] = []
        for name in order:
            if len(proposals) >= n:
                break
            spec, current = space[name], start[name]
            if spec.values:
                others = [c for c in spec.values if c != current]
                if not others:
                    continue
                value = others[int(rng.integers(len(others)))]
            else:
                step = rng.uniform(*NEIGHBOUR_STEPS) * (1 if rng.random() < 0.5 else -1)
                value = spec.stepped(current, step)
                if value == current:
                    continue
            flat, notes = self.admissible({**start, name: value}, ctx)
            key = tuple(view.unit(flat).round(9)) if flat is not None else None
            if key is None or key in seen:
                continue
            seen.add(key)
            proposals.append(self.proposal_of(ctx, first + len(proposals), flat, notes, (
                f"start-up, near the best config ({view.ids[best]}, {self.study.metric} "
                f"{view.values[best]:.4g}): {name} {current!r} → {value!r}; the study declared its "
                f"baseline, so the start-up explores the best config's neighbourhood "
                f"({view.n_completed} of the {need} completed trials the world model needs)")))
        return proposals

    def propose(self, ctx: AgentContext) -> list[Proposal]:
        n, names = ctx.quota, self.searched(ctx)
        view = ctx.history()
        if n <= 0 or not names:
            return []
        need = startup_size(len(names))
        wm = self._world_model(ctx) if view.n_completed >= need else None
        if wm is None or wm.is_prior:
            return self._startup(ctx, n, names, need)
        axes = view.axes(self.study.proposers.exclude)
        space = self.study.search_space
        rng = np.random.default_rng(self.study.seed * 1_000_003 + ctx.cycle_id)
        sobol = qmc.Sobol(d=len(names), scramble=True, seed=int(rng.integers(2**31)))
        raw = []
        for i in view.top_indices(0.0, minimum=LOCAL_CENTRES):
            for step in LOCAL_STEPS:
                raw.append(np.clip(view.X[i, axes] + rng.normal(0.0, step, (LOCAL_CANDIDATES, len(axes))), 0, 1))
        # exploit: the trust region alone (a model fitted on few trials extrapolates EI
        # to far corners along the parameters it has not learned yet); else the whole space too
        local = ctx.strategy is not None and ctx.strategy.mode == StrategyMode.EXPLOIT
        if not local:
            raw.insert(0, sobol.random_base2(int(math.log2(SOBOL_CANDIDATES))))
        pool = ("moves around the best trials (exploit: the trust region only), refined" if local
                else "Sobol, moves around the best trials, refined")
        best = ctx.summary.best_value if ctx.summary.best_value is not None else wm.best

        fixed = {k: v for k, v in view.baseline_flat.items() if k not in names}
        cap = risk_cap(self.study, view)

        def score(units: np.ndarray) -> tuple[dict[str, list], np.ndarray, np.ndarray, np.ndarray,
                                              np.ndarray, np.ndarray]:
            # columns of values, and the points snapped to the values they take (ints,
            # choices), for distances: all vectorised, no config dict per candidate
            columns, points = space.from_unit_matrix(names, units)
            mean, std, risk = wm.predict_columns({**{k: [v] * len(units) for k, v in fixed.items()}, **columns},
                                                 len(units))
            std = np.maximum(std, 1e-12)
            imp = self.study.sign * (mean - best)  # expected improvement over the current best
            ei = np.maximum(imp * norm.cdf(imp / std) + std * norm.pdf(imp / std), 0.0)
            # over the risk cap the critic and the supervisor refuse it: no acquisition
            return columns, points, mean, std, risk, np.where(risk > cap, 0.0, ei)

        # Refine: finer and finer moves around the pool's best candidates, so the
        # acquisition's maximum is found to a small fraction of each axis, not to the
        # pool's spacing (what lets a GP close in on a smooth optimum).
        units = np.vstack(raw)
        units, (columns, points, mean, std, risk, ei) = _refine(units, score(units), REFINE_STEPS, score, rng,
                                                                skip_nil=True)
        acq = ei * (1.0 - risk)
        in_flight = view.X[view.status == "RUNNING"][:, axes]  # (rolling) they damp like picks of this batch
        best_row = view.best_index()
        n_polish = (min(n, self.study.budget.trials_per_cycle, POLISH_MAX + 1) - 1
                    if best_row is not None and rich_history(view.n_completed, len(names)) else 0)
        if n_polish:
            polish_units, polished = self._polish(view.X[best_row, axes], score, rng)
            polish_acq = polished[5] * (1.0 - polished[4])
            k0 = len(units)
            units = np.vstack([units, polish_units])
            columns = {k: columns[k] + polished[0][k] for k in columns}
            points, mean, std, risk, ei = (np.concatenate([a, b]) for a, b in zip(
                (points, mean, std, risk, ei), polished[1:]))
            # each pick damps its own kind: the whole pool's picks PENALTY_RADIUS around
            # them, the polish picks POLISH_RADIUS (the polish candidates are all closer)
            acq = np.concatenate([acq, np.full(len(polish_acq), -np.inf)])
            polish_acq = np.concatenate([np.full(k0, -np.inf), polish_acq])

        def damped(scores: np.ndarray, x: np.ndarray, radius: float) -> np.ndarray:
            """``scores`` with local penalisation around the point ``x`` (the candidates
            without acquisition, or masked at -inf, stay as they are)."""
            factor = 1.0 - np.exp(-0.5 * (rms_distance(points, x)[:, 0] / radius) ** 2)
            return np.where(scores > 0, scores * factor, scores)

        for x in in_flight:
            acq = damped(acq, x, PENALTY_RADIUS)
            if n_polish:
                polish_acq = damped(polish_acq, x, POLISH_RADIUS)
        proposals: list[Proposal] = []
        # the supervisor refuses a config within its duplicate tolerance of one run or in
        # flight, or of one approved earlier in the cycle: such a pick would waste its slot
        tol = self.study.supervisor.same_config_distance
        picked: list[np.ndarray] = []

        def pick(scores: np.ndarray, radius: float, want: int, why: str) -> np.ndarray:
            """Greedy picks by ``scores`` with local penalisation at ``radius``; returns the
            scores left."""
            for _ in range(8 * want):
                if want <= 0 or not np.isfinite(scores).any() or scores.max() <= 0:
                    break
                j = int(np.argmax(scores))
                scores = damped(scores, points[j], radius)
                scores[j] = -np.inf
                flat, notes = self.admissible({k: columns[k][j] for k in names}, ctx)
                if flat is None:
                    continue
                x = view.unit(flat)
                if view.ran_near(x, tol, picked):
                    continue  # a duplicate of a config run or picked (the model's optimum sits on one)
                picked.append(x)
                want -= 1
                k = len(proposals) + 1
                proposals.append(self.proposal_of(ctx, k, flat, notes, (
                    f"world model's acquisition, pick {k} of {n} (local penalisation): EI {ei[j]:.3g}, "
                    f"predicted {self.study.metric} {mean[j]:.4g} ± {std[j]:.2g}, P(fail) {risk[j]:.2f}, "
                    + why)))
            return scores

        acq = pick(acq, PENALTY_RADIUS, n - n_polish, f"best of {len(units)} candidates ({pool})")
        if n_polish:
            pick(polish_acq, POLISH_RADIUS, n - len(proposals), (
                f"polish: best of {len(polish_units)} moves within {POLISH_STEPS[0]:g} of the best trial "
                f"({view.ids[best_row]}, {self.study.metric} {view.values[best_row]:.4g}; "
                f"{view.n_completed} completed trials, at least {RICH_HISTORY} per searched parameter)"))
        pick(acq, PENALTY_RADIUS, n - len(proposals), f"best of {len(units)} candidates ({pool})")
        return proposals

    def _polish(self, incumbent: np.ndarray, score: Callable[[np.ndarray], tuple],
                rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
        """Candidates close to the best trial (:data:`POLISH_STEPS`), refined around the
        best-scoring ones (:data:`POLISH_REFINE`): their unit-cube rows and ``score`` tuple."""
        units = np.vstack([np.clip(incumbent + rng.normal(0.0, step, (POLISH_MOVES, len(incumbent))), 0, 1)
                           for step in POLISH_STEPS])
        return _refine(units, score(units), POLISH_REFINE, score, rng, skip_nil=False)


def _refine(units: np.ndarray, scored: tuple, steps: tuple[float, ...], score: Callable[[np.ndarray], tuple],
            rng: np.random.Generator, skip_nil: bool) -> tuple[np.ndarray, tuple]:
    """Moves of each of ``steps`` (finer and finer) around the :data:`REFINE_CENTRES`
    candidates of highest acquisition (EI × chance not to fail), scored and appended:
    the candidates' unit-cube rows and ``score`` tuple (columns, points, mean, std, risk,
    EI). ``skip_nil``: candidates with no acquisition are not moved around, and the
    refinement stops when none has any."""
    for step in steps:
        acq = scored[5] * (1.0 - scored[4])
        top = [j for j in np.argsort(-acq)[:REFINE_CENTRES] if not skip_nil or acq[j] > 0]
        if not top:
            break
        moves = np.vstack([np.clip(units[j] + rng.normal(0.0, step, (REFINE_CANDIDATES, units.shape[1])), 0, 1)
                           for j in top])
        more = score(moves)
        units = np.vstack([units, moves])
        scored = ({k: scored[0][k] + more[0][k] for k in scored[0]},
                  *(np.concatenate([a, b]) for a, b in zip(scored[1:], more[1:])))
    return units, scored


def declared_baseline(study: "StudyConfig", names: list[str]) -> bool:
    """Whether the study's baseline is the user's (not the space's middle, the default of
    :func:`arc_ray.api.make_study`) on any of the searched parameters ``names``."""
    base = flatten_config(study.baseline)
    middle = study.search_space.middle()
    return any(name in base and base[name] != middle[name] for name in names)


def rich_history(n_completed: int, n_searched: int) -> bool:
    """Whether ``n_completed`` trials are :data:`RICH_HISTORY` per searched parameter (at
    least one parameter counted): the surrogate then polishes, the director gives it more."""
    return n_completed >= RICH_HISTORY * max(1, n_searched)


def startup_size(n_searched: int) -> int:
    """Completed trials before the world model is worth maximising: :data:`MIN_OBSERVATIONS`
    and two per searched parameter."""
    return max(MIN_OBSERVATIONS, 2 * n_searched)
