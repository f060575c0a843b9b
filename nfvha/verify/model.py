"""The KAOS requirement model shipped in data/requirements.yaml, as objects."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Dict, List, Optional

import yaml

CHECKS = {"lb_balances", "lb_detects", "lb_isolates", "alarm_reported", "cluster_recovers",
          "failover", "cm_detects", "mq_subscribed"}


@dataclass(frozen=True)
class Goal:
    id: str
    text: str
    refines: Optional[str] = None


@dataclass(frozen=True)
class Obstacle:
    id: str
    text: str
    obstructs: List[str]
    resolved_by: List[str]


@dataclass(frozen=True)
class Agent:
    id: str
    text: str
    examples: List[str]


@dataclass(frozen=True)
class Requirement:
    id: str
    text: str
    goal: str
    agent: str
    scenario: str
    check: str
    metric: str
    yardstick: List[str] = field(default_factory=list)


@dataclass
class Model:
    goals: Dict[str, Goal]
    obstacles: Dict[str, Obstacle]
    agents: Dict[str, Agent]
    requirements: Dict[str, Requirement]
    scenarios: Dict[str, dict]
    components: List[dict]
    sal: Dict[str, dict]
    default_sal: str

    def for_scenario(self, name: str) -> List[Requirement]:
        return [r for r in self.requirements.values() if r.scenario == name]


def load(text: Optional[str] = None) -> Model:
    """Loads the shipped model (or `text`), checking its links."""
    if text is None:
        text = resources.files("nfvha.verify").joinpath("data/requirements.yaml").read_text()
    d = yaml.safe_load(text)
    goals = {g["id"]: Goal(g["id"], g["text"], g.get("refines")) for g in d["goals"]}
    obstacles = {o["id"]: Obstacle(o["id"], o["text"], list(o["obstructs"]),
                                   list(o["resolved_by"])) for o in d["obstacles"]}
    agents = {a["id"]: Agent(a["id"], a["text"], list(a.get("examples", [])))
              for a in d["agents"]}
    scen = d["scenarios"]
    tc: Dict[str, List[str]] = {}
    for c in d["components"]:
        if c.get("yardstick"):
            tc.setdefault(c["scheme"], []).append(c["yardstick"])
    reqs = {}
    for r in d["requirements"]:
        reqs[r["id"]] = Requirement(r["id"], r["text"], r["goal"], r["agent"], r["scenario"],
                                    r["check"], r["metric"], tc.get(r["scenario"], []))
    m = Model(goals, obstacles, agents, reqs, scen, list(d["components"]), d["sal"],
              d["default_sal"])
    _check_links(m)
    return m


def _check_links(m: Model) -> None:
    errors = []
    for g in m.goals.values():
        if g.refines and g.refines not in m.goals:
            errors.append(f"goal {g.id} refines unknown {g.refines}")
    for o in m.obstacles.values():
        errors += [f"obstacle {o.id}: unknown goal {x}" for x in o.obstructs + o.resolved_by
                   if x not in m.goals]
    for r in m.requirements.values():
        if r.goal not in m.goals:
            errors.append(f"{r.id}: unknown goal {r.goal}")
        if r.agent not in m.agents:
            errors.append(f"{r.id}: unknown agent {r.agent}")
        if r.scenario not in m.scenarios:
            errors.append(f"{r.id}: unknown scenario {r.scenario}")
        if r.check not in CHECKS:
            errors.append(f"{r.id}: unknown check {r.check}")
    if errors:
        raise ValueError("requirement model: " + "; ".join(errors))
