"""The agent collective: director, proposers, critic, supervisor, and the vote.

Agents are plain classes with one contract (:class:`Agent`: ``propose`` and ``vote``),
made Ray actors by the orchestrator. :class:`Collective` runs one cycle's decision over
plain objects or actor handles alike. Proposers register themselves by name
(:func:`register_proposer`); importing this package imports the built-in ones, so
their names are known. :func:`build_agents` / :func:`agent_classes` map a study's
``proposers.enabled`` names to classes.
"""

from __future__ import annotations

# The built-in proposers register themselves when their modules are imported.
from arc_ray.agents.architect import ArchitectProposer
from arc_ray.agents.base import Agent, AgentContext, Proposer
from arc_ray.agents.bayesian import BayesianProposer
from arc_ray.agents.collective import Collective, CycleDecision
from arc_ray.agents.critic import Critic
from arc_ray.agents.director import Director
from arc_ray.agents.explorer import ExplorerProposer
from arc_ray.agents.recovery import RecoveryProposer
from arc_ray.agents.registry import proposer_class, proposer_names, register_proposer
from arc_ray.agents.roster import agent_classes, build_agents, build_roster
from arc_ray.agents.supervisor import Supervisor
from arc_ray.agents.surrogate import SurrogateProposer
from arc_ray.agents.voting import Ballot, Tally, tally

__all__ = [
    "Agent",
    "AgentContext",
    "ArchitectProposer",
    "Ballot",
    "BayesianProposer",
    "Collective",
    "CycleDecision",
    "Critic",
    "Director",
    "ExplorerProposer",
    "Proposer",
    "RecoveryProposer",
    "Supervisor",
    "SurrogateProposer",
    "Tally",
    "agent_classes",
    "build_agents",
    "build_roster",
    "proposer_class",
    "proposer_names",
    "register_proposer",
    "tally",
]
