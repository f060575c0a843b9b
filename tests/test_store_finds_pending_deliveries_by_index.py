"""Every controller's lease pass looks for pending deliveries five times a
second. The database must find them through an index, not by reading every
delivery ever made (which grows with every fault stored)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import event

from nfvha.controller import validate
from nfvha.controller.store import Store, utcnow
from tests.test_controller_helpers import fault


def test_the_lease_pass_reads_pending_deliveries_through_an_index(tmp_path) -> None:
    s = Store(f"sqlite:///{tmp_path}/nfvha.db")
    try:
        for _ in range(3):
            s.record_fault(validate.fault_event(fault()), ["log", "webhook"])
        statements: list[tuple[str, Any]] = []

        def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if "deliveries" in statement and "status" in statement:
                statements.append((statement, parameters))

        event.listen(s.engine, "before_cursor_execute", seen)
        now = utcnow()
        claimed = s.claim_pending("ctl-a", now, now + timedelta(seconds=5))
        event.remove(s.engine, "before_cursor_execute", seen)
        assert len(claimed) == 6
        assert len(statements) >= 2  # the claim (UPDATE) and the read of what we own
        with s.engine.connect() as conn:
            for statement, parameters in statements:
                plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                            parameters).all()
                steps = " | ".join(str(row[-1]) for row in plan)
                # SEARCH: rows found through an index; SCAN: the table read through
                assert "SCAN deliveries" not in steps, (statement, steps)
                assert "SEARCH deliveries" in steps, (statement, steps)
    finally:
        s.close()
