"""The architect: model family, size, image size and dropout, informed by the historian's patterns."""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

import numpy as np

from arc_ray.agents.base import AgentContext, Proposer, describe_config
from arc_ray.agents.registry import register_proposer
from arc_ray.errors import ConfigValidationError
from arc_ray.records import Pattern, Proposal, ProposalType, Resources, RiskLevel
from arc_ray.space import ParamSpec, flatten_config
from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)

# Parameters the architect owns, recognised by the last part of their dotted name.
ROLES: dict[str, tuple[str, ...]] = {
    "model": ("model", "model_name", "arch", "architecture", "backbone"),
    "size": ("layers", "num_layers", "depth", "width", "hidden_size", "model_size"),
    "image_size": ("image_size", "img_size", "input_size", "resolution"),
    "dropout": ("dropout", "drop_rate", "dropout_rate"),
}

# Parameter counts (millions) of timm models the studies use: "larger" means more of them.
MODEL_PARAMS_M: dict[str, float] = {
    "mobilenetv3_small_100": 2.5, "mobilenetv3_large_100": 5.5, "efficientnet_b0": 5.3,
    "efficientnet_b1": 7.8, "efficientnet_b2": 9.1, "resnet18": 11.7, "efficientnet_b3": 12.2,
    "efficientnet_b4": 19.3, "resnet34": 21.8, "vit_small_patch16_224": 22.1, "resnet50": 25.6,
    "convnext_tiny": 28.6, "efficientnet_b5": 30.4, "efficientnet_b6": 43.0, "resnet101": 44.5,
    "efficientnet_b7": 66.3, "vit_base_patch16_224": 86.6, "convnext_base": 88.6,
    "vit_large_patch16_224": 304.3,
}
LARGE_MODEL_PARAMS_M = 30.0  # at or above this, a trial asks for twice the study's GPUs
LARGE_IMAGE_SIZE = 320  # likewise for inputs this large


def role_of(name: str) -> str | None:
    leaf = name.rpartition(".")[2].lower()
    for role, leaves in ROLES.items():
        if leaf in leaves:
            return role
    return None


def is_large(flat: dict[str, Any], params: dict[str, str]) -> bool:
    """Whether a config's model or input is large enough to want more GPU."""
    model = flat.get(params.get("model", ""), None)
    if isinstance(model, str) and MODEL_PARAMS_M.get(model, 0.0) >= LARGE_MODEL_PARAMS_M:
        return True
    size = flat.get(params.get("image_size", ""), None)
    return isinstance(size, (int, float)) and not isinstance(size, bool) and size >= LARGE_IMAGE_SIZE


@register_proposer("architect")
class ArchitectProposer(Proposer):
    """Changes one architectural parameter of the best config (the baseline before any
    result) per proposal, rotating over model family, model size, image size and
    dropout. Values come from the historian's patterns (a value over-represented among
    the top quartile, lift > 1) where there is one, else the least tried value. Declared
    and learned constraints are respected up front (a ViT gets the image size it needs).
    For a large model or input it asks for twice the study's GPUs per trial, when the
    study has GPUs at all.

    Votes by the patterns: approves proposals that agree with them.
    """

    name = "architect"
    proposal_type = ProposalType.ARCHITECTURE_CHANGE

    @classmethod
    def applies_to(cls, study: StudyConfig) -> bool:
        return any(role_of(n) for n in study.searched_names)

    def roles(self, ctx: AgentContext) -> dict[str, str]:
        """role → parameter name, for the architectural parameters of this study."""
        out: dict[str, str] = {}
        for name in self.searched(ctx):
            role = role_of(name)
            if role and role not in out:
                out[role] = name
        return out

    def propose(self, ctx: AgentContext) -> list[Proposal]:
        n = ctx.quota
        roles = self.roles(ctx)
        if n <= 0 or not roles:
            return []
        view = ctx.history()
        best = view.best_index()
        start = view.flat_config(best) if best is not None else {
            k: v for k, v in view.baseline_flat.items() if k in self.study.search_space}
        origin = f"the best config ({view.ids[best]}, {self.study.metric} {view.values[best]:.4g})" \
            if best is not None else "the baseline"
        rng = np.random.default_rng([self.study.seed, ctx.cycle_id, 17])
        patterns = _patterns_by_param(ctx.summary.patterns)
        tried = {name: Counter(_key(v) for v in view.raw(name)) for name in roles.values()}
        order = list(roles)
        proposals: list[Proposal] = []
        used: set[tuple] = set()
        for attempt in range(3 * n):
            if len(proposals) >= n:
                break
            role = order[(ctx.cycle_id + attempt) % len(order)]
            param = roles[role]
            spec = self.study.search_space[param]
            value, why = self._pick(spec, param, start.get(param), patterns.get(param, []), tried[param], rng)
            if value is None:
                continue
            flat = dict(start)
            flat[param] = value
            flat, fixed = self._respect_constraints(flat, roles, ctx)
            if flat is None:
                continue
            key = tuple(sorted((k, repr(v)) for k, v in flat.items()))
            if key in used:
                continue
            used.add(key)
            resources = None
            if self.study.resources.gpu > 0 and is_large(flat, roles):
                gpu = min(2 * self.study.resources.gpu, self.study.supervisor.max_gpu_per_trial)
                resources = Resources(cpu=self.study.resources.cpu, gpu=gpu)
            grows = _grows(start, flat, roles)
            risk = RiskLevel.HIGH if is_large(flat, roles) else RiskLevel.MEDIUM if grows else RiskLevel.LOW
            rationale = (f"{role}: {param} {start.get(param)!r} → {value!r} on {origin}; {why}"
                         + (f"; {fixed}" if fixed else "")
                         + (f"; asks {resources.gpu:g} GPU per trial for the larger model" if resources else ""))
            k = len(proposals) + 1
            proposals.append(self.proposal(ctx, k, self.changes_from(flat, ctx), rationale,
                                           risk_level=risk, resources=resources))
        return proposals

    def _pick(self, spec: ParamSpec, param: str, current: Any, patterns: list[Pattern],
              tried: Counter, rng: np.random.Generator) -> tuple[Any, str]:
        """A new value for ``param`` and why."""
        for p in sorted(patterns, key=lambda p: (-p.lift, -p.support)):
            good, problem = spec.check(p.value)
            if not problem and p.lift > 1.0 and good != current:
                return good, f"pattern: {param}={good!r} has lift {p.lift:.2f} among the top quartile (support {p.support})"
        if spec.values:
            others = [c for c in spec.values if c != current]
            if not others:
                return None, ""
            least = min(tried.get(_key(c), 0) for c in others)
            pool = [c for c in others if tried.get(_key(c), 0) == least]
            value = pool[int(rng.integers(len(pool)))]
            return value, f"the least tried value ({least} trials so far)"
        # numeric: a step of about a fifth of the range, either way
        step = 0.2 * (1 if rng.random() < 0.5 else -1)
        value = spec.stepped(current, step) if current is not None else spec.from_unit(0.5 + step)
        if value == current:
            return None, ""
        return value, "a step of a fifth of its range"

    def _respect_constraints(self, flat: dict[str, Any], roles: dict[str, str],
                             ctx: AgentContext) -> tuple[dict[str, Any] | None, str]:
        """Make the config valid: move it out of forbidden regions, else adjust another
        architectural parameter (a ViT gets the image size it needs), if possible."""
        moved, notes = self.admissible(flat, ctx)
        if moved is not None:
            return moved, ", ".join(notes)
        gen = ctx.config_generator()
        for role in ("image_size", "size", "dropout", "model"):
            param = roles.get(role)
            if param is None:
                continue
            spec = self.study.search_space[param]
            values = spec.values or [spec.from_unit(u) for u in np.linspace(0, 1, 5)]
            for v in values or []:
                if v == flat.get(param):
                    continue
                trial = {**flat, param: v}
                try:
                    gen.validate(self.changes_from(trial, ctx))
                    return trial, f"{param} set to {v!r} to satisfy: {notes[0] if notes else 'the rules'}"
                except ConfigValidationError:
                    continue
        logger.debug("architect: no valid variant of %s: %s", describe_config(flat), notes)
        return None, ""

    def goodness(self, proposals: list[Proposal], ctx: AgentContext) -> list[tuple[float, str] | None]:
        patterns = [p for p in ctx.summary.patterns if p.lift > 1.0]
        if not patterns:
            return [None] * len(proposals)
        out: list[tuple[float, str] | None] = []
        base = ctx.history().baseline_flat
        for prop in proposals:
            flat = {**base, **flatten_config(prop.changes)}
            total, agree, against = 0.0, [], []
            for p in patterns:
                if p.parameter not in flat:
                    continue
                w = math.log(p.lift) * min(1.0, p.support / 3)
                if _key(flat[p.parameter]) == _key(p.value):
                    total += w
                    agree.append(f"{p.parameter}={p.value}")
                elif self.study.search_space.params.get(p.parameter) is not None and \
                        self.study.search_space[p.parameter].type in ("categorical", "bool"):
                    total -= w / 2  # another choice of a parameter with a winning choice
                    against.append(f"{p.parameter}≠{p.value}")
            score = 0.5 + 0.5 * math.tanh(total)
            why = f"patterns: agrees with {agree or 'none'}; differs from {against or 'none'}"
            out.append((score, why))
        return out


def _patterns_by_param(patterns: list[Pattern]) -> dict[str, list[Pattern]]:
    out: dict[str, list[Pattern]] = {}
    for p in patterns:
        out.setdefault(p.parameter, []).append(p)
    return out


def _key(value: Any) -> Any:
    return ("n", float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else ("o", repr(value))


def _grows(before: dict[str, Any], after: dict[str, Any], roles: dict[str, str]) -> bool:
    m = roles.get("model")
    if m and before.get(m) != after.get(m):
        return MODEL_PARAMS_M.get(str(after.get(m)), 0) > MODEL_PARAMS_M.get(str(before.get(m)), 0)
    for role in ("size", "image_size"):
        p = roles.get(role)
        a, b = (after.get(p), before.get(p)) if p else (None, None)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > b:
            return True
    return False
