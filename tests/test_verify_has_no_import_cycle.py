"""nfvha/verify has no import cycle: the runner dispatches to yardstick and
scenarios/middleware, which build results and take sessions from modules
below all three (results.py, session.py), never from the runner. Same
checker as nfvha/compute's (every import counted, function-level and
TYPE_CHECKING ones too)."""
from __future__ import annotations

from test_compute_has_no_import_cycle import find_cycle, graph

PACKAGE = "nfvha.verify"


def test_the_checker_follows_nfvha_verify_imports() -> None:
    g = graph(PACKAGE)
    assert "nfvha.verify.yardstick" in g["nfvha.verify.runner"]        # function-level
    assert "nfvha.verify.scenarios.middleware" in g["nfvha.verify.runner"]
    assert "nfvha.verify.session" in g["nfvha.verify.scenarios.middleware"]  # TYPE_CHECKING
    assert "nfvha.verify.deploy" in g["nfvha.verify.deploy.keepalived"]  # its package


def test_nfvha_verify_has_no_import_cycle() -> None:
    cycle = find_cycle(graph(PACKAGE))
    assert cycle is None, " -> ".join(cycle or [])


def test_nothing_below_the_runner_imports_it() -> None:
    importers = sorted(m for m, deps in graph(PACKAGE).items() if "nfvha.verify.runner" in deps)
    assert importers == ["nfvha.verify.cli", "nfvha.verify.report"]
