"""The constraints agents plan with, and moving a config out of their forbidden regions.

What the historian learned is one view, :meth:`HistorySummary.learned_constraints
<arc_ray.records.HistorySummary.learned_constraints>` (its summary also lists the study's
declared constraints, which the study itself holds).

Proposers sample without knowing the constraints; rather than throw a forbidden sample
away, they move it just outside the region: a single-parameter bound is crossed by a
small step in the unit cube, a product bound (``batch_size × image_size``) is met by the
largest smaller batch size, else by shrinking the first numeric factor.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from arc_ray.records import Constraint
from arc_ray.space import ParamSpec, SearchSpace

BATCH_LEAVES = ("batch_size",)
_STEPS = (0.01, 0.03, 0.1)  # unit-cube margins tried beyond a bound


def smaller_values(spec: ParamSpec, value: Any) -> list[Any]:
    """Values of a numeric or numeric-categorical parameter below ``value``, nearest first."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return []
    if spec.type == "categorical":
        nums = [c for c in (spec.choices or []) if isinstance(c, (int, float)) and not isinstance(c, bool)]
        return sorted((c for c in nums if c < value), reverse=True)
    if spec.type == "int":
        out, v = [], int(value)
        while v // 2 >= spec.low and v // 2 < v:  # halving, as batch sizes go
            v //= 2
            out.append(v)
        return out
    return []


def _outside_single(spec: ParamSpec, c: Constraint, value: Any) -> list[Any]:
    """Values of a one-parameter constraint's parameter just outside its region, nearest first."""
    if spec.type == "categorical":
        nums = [x for x in (spec.choices or []) if isinstance(x, (int, float)) and not isinstance(x, bool)]
        below = sorted((x for x in nums if c.low is not None and x < c.low), reverse=True)
        above = sorted(x for x in nums if c.high is not None and x > c.high)
        return [v for pair in zip(below + [None] * len(above), above + [None] * len(below)) for v in pair if v is not None]
    if spec.type not in ("float", "int"):
        return []
    out = []
    u = spec.to_unit(value)
    for step in _STEPS:
        for bound, sign in ((c.low, -1), (c.high, 1)):
            if bound is None or not (spec.low <= bound <= spec.high):  # type: ignore[operator]
                continue
            target = spec.to_unit(bound) + sign * step
            if 0.0 <= target <= 1.0:
                out.append((abs(target - u), spec.from_unit(target)))
    return [v for _, v in sorted(out, key=lambda t: t[0])]


def project_out(flat: Mapping[str, Any], constraints: Iterable[Constraint],
                space: SearchSpace, fixed: Iterable[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """``flat`` moved out of every constraint that forbids it, where one move can do it.

    Args:
        flat: a flat config (dotted keys).
        constraints: declared and learned constraints.
        space: the search space (moves stay inside it).
        fixed: parameters that must not move.

    Returns:
        the moved config (still forbidden if no move helped: the caller validates) and a
        note per move, e.g. ``"lr 0.03 → 4.1e-05 (out of learned:diverged:lr)"``.
    """
    out = dict(flat)
    notes: list[str] = []
    keep = set(fixed)
    for c in constraints:
        if not c.forbids(out):
            continue
        movable = [p for p in c.parameters if p in space and p not in keep]
        if not movable:
            continue
        if len(c.parameters) == 1:
            name = movable[0]
            for v in _outside_single(space[name], c, out[name]):
                trial = {**out, name: v}
                if not c.forbids(trial):
                    notes.append(f"{name} {_fmt(out[name])} → {_fmt(v)} (out of {c.id})")
                    out = trial
                    break
            continue
        batch = next((p for p in movable if p.rpartition(".")[2] in BATCH_LEAVES), None)
        for name in ([batch] if batch else []) + [p for p in movable if p != batch]:
            candidates = smaller_values(space[name], out[name]) if space[name].type != "float" else \
                [space[name].from_unit(max(space[name].to_unit(out[name]) - s, 0.0)) for s in (0.1, 0.25, 0.5)]
            moved = False
            for v in candidates:
                trial = {**out, name: v}
                if not c.forbids(trial):
                    notes.append(f"{name} {_fmt(out[name])} → {_fmt(v)} (out of {c.id})")
                    out, moved = trial, True
                    break
            if moved:
                break
    return out, notes


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
