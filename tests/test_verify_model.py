"""The shipped KAOS requirement model: complete, linked, rendered by Graphviz."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from nfvha.verify import kaos, model
from tests.conftest import require_command

SEED_TEXT = {
    "Req 5.4.1": "Redundant VIM components should be load balanced by a load balancer.",
    "Req 5.4.3": "The load balancer should isolate the failed VIM component instance until it "
                 "is recovered.",
    "Req 5.4.6": "The cluster manager should replace the failed main VIM component instance "
                 "with a backup instance.",
    "Req 5.4.10": "Redundant component instances should subscribe to the Message Queue, which "
                  "is implemented by the installer.",
}


def test_model_has_all_twelve_requirements_with_seed_text():
    m = model.load()
    assert list(m.requirements) == [f"Req 5.4.{i}" for i in range(1, 13)]
    for rid, text in SEED_TEXT.items():
        assert m.requirements[rid].text == text


def test_requirements_map_to_scenarios_agents_and_yardstick_cases():
    m = model.load()
    by_scen = {s: [r.id for r in m.for_scenario(s)] for s in m.scenarios}
    assert by_scen["active-active"] == [f"Req 5.4.{i}" for i in range(1, 6)]
    assert by_scen["active-passive"] == [f"Req 5.4.{i}" for i in range(6, 10)]
    assert by_scen["message-queue"] == [f"Req 5.4.{i}" for i in range(10, 13)]
    assert set(m.agents) == {"load_balancer", "cluster_manager", "message_queue", "alarm"}
    assert m.requirements["Req 5.4.2"].agent == "load_balancer"
    assert m.requirements["Req 5.4.5"].agent == "cluster_manager"
    assert m.requirements["Req 5.4.4"].agent == "alarm"
    assert m.requirements["Req 5.4.1"].yardstick == ["tc019", "tc045", "tc046", "tc047",
                                                      "tc048", "tc049"]
    assert m.requirements["Req 5.4.6"].yardstick == ["tc053", "tc056", "tc057"]
    # The obstacle of Table 2 obstructs VIM HA and is resolved by the three schemes.
    assert m.obstacles["O1"].obstructs == ["G3.2"]
    assert m.sal["SAL1"]["detection_ms"] == 1000 and m.default_sal == "SAL1"


def test_goal_tree_reaches_the_root_from_every_requirement():
    m = model.load()
    for r in m.requirements.values():
        g, seen = r.goal, []
        while g is not None:
            seen.append(g)
            g = m.goals[g].refines
        assert seen[-1] == "G0" and "G3.2" in seen, (r.id, seen)


def test_broken_links_are_rejected():
    text = model.resources.files("nfvha.verify").joinpath("data/requirements.yaml").read_text()
    with pytest.raises(ValueError, match="unknown agent"):
        model.load(text.replace("agent: load_balancer", "agent: nobody", 1))
    with pytest.raises(ValueError, match="unknown check"):
        model.load(text.replace("check: lb_detects", "check: guess", 1))


def test_dot_uses_kaos_shapes_and_verdict_colours():
    dot = kaos.to_dot(model.load(), {"Req 5.4.2": "pass", "Req 5.4.3": "fail"})
    assert re.search(r'"G3\.2" \[shape=parallelogram', dot)
    assert re.search(r'"agent:load_balancer" \[shape=hexagon', dot)
    assert re.search(r'"O1" \[shape=parallelogram[^\]]*color=red', dot)
    req2 = re.search(r'^  "Req 5\.4\.2" \[(.*)\];$', dot, re.M).group(1)
    req3 = re.search(r'^  "Req 5\.4\.3" \[(.*)\];$', dot, re.M).group(1)
    req6 = re.search(r'^  "Req 5\.4\.6" \[(.*)\];$', dot, re.M).group(1)
    assert "penwidth=3" in req2                       # requirement = bold parallelogram
    assert kaos.COLOURS["pass"] in req2 and "[PASS]" in req2
    assert kaos.COLOURS["fail"] in req3 and "[FAIL]" in req3
    assert kaos.COLOURS[None] in req6                 # not verified: white


def test_cli_renders_svg_coloured_by_a_runs_results(tmp_path):
    require_command("dot")
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"sal": "SAL1", "scenarios": [{"name": "active-active",
                   "requirements": [{"id": "Req 5.4.5", "verdict": "fail", "why": "x"}]}]}))
    out = tmp_path / "kaos.svg"
    p = subprocess.run([sys.executable, "-m", "nfvha.cli.main", "verify", "model", "--results",
                        str(run), "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # Graphviz draws the failed requirement's polygon in the fail colour.
    node = svg[svg.index("<title>Req 5.4.5</title>"):]
    node = node[:node.index("</g>")]
    assert kaos.COLOURS["fail"] in node
    png = tmp_path / "kaos.png"
    p = subprocess.run([sys.executable, "-m", "nfvha.cli.main", "verify", "model", "--format",
                        "png", "-o", str(png)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
