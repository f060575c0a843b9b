"""The Nova stand-in answers what Masakari's engine and API ask, as Nova's
api-ref says: os-stop/os-start move the vm_state (status SHUTOFF/ACTIVE),
409 conflictingRequest for a vm_state the action does not start from or a
task in progress, "Show Server Details" with metadata and OS-EXT-STS
fields, "List Compute Services" filtered by binary and host."""
from __future__ import annotations

import httpx

from nfvha.standins.nova import NovaStandin


async def test_stop_then_start_moves_the_vm_state_and_refuses_out_of_order() -> None:
    async with NovaStandin(metadata={"u1": {"HA_Enabled": "True"}}) as n, \
            httpx.AsyncClient(base_url=n.url + "/v2.1") as h:
        assert (await h.post("/servers/u1/action", json={"os-start": None})).status_code == 409
        assert (await h.post("/servers/u1/action", json={"os-stop": None})).status_code == 202
        off = (await h.get("/servers/u1")).json()["server"]
        assert (off["status"], off["OS-EXT-STS:vm_state"]) == ("SHUTOFF", "stopped")
        again = await h.post("/servers/u1/action", json={"os-stop": None})
        assert again.status_code == 409
        assert "vm_state stopped" in again.json()["conflictingRequest"]["message"]
        assert (await h.post("/servers/u1/action", json={"os-start": None})).status_code == 202
        on = (await h.get("/servers/u1")).json()["server"]
        assert (on["status"], on["OS-EXT-STS:vm_state"]) == ("ACTIVE", "active")
        assert on["metadata"] == {"HA_Enabled": "True"} and on["OS-EXT-STS:task_state"] is None
        bad = await h.post("/servers/u1/action", json={"os-start": {"x": 1}})
        assert bad.status_code == 400
    assert n.actions == [("u1", "os-stop", None), ("u1", "os-start", None)]


async def test_a_task_in_progress_refuses_every_power_action() -> None:
    async with NovaStandin() as n, httpx.AsyncClient(base_url=n.url + "/v2.1") as h:
        n.task_states["u1"] = "migrating"
        codes = [(await h.post("/servers/u1/action", json=body)).status_code
                 for body in ({"os-stop": None}, {"reboot": {"type": "HARD"}})]
        shown = (await h.get("/servers/u1")).json()["server"]
    assert codes == [409, 409] and n.actions == []
    assert shown["OS-EXT-STS:task_state"] == "migrating"


async def test_compute_services_are_listed_by_host() -> None:
    async with NovaStandin(compute_hosts={"cmp-1", "cmp-2"}) as n, \
            httpx.AsyncClient(base_url=n.url + "/v2.1") as h:
        one = (await h.get("/os-services", params={"binary": "nova-compute",
                                                   "host": "cmp-1"})).json()["services"]
        none = (await h.get("/os-services", params={"host": "cmp-9"})).json()["services"]
        every = (await h.get("/os-services")).json()["services"]
    assert [(s["host"], s["binary"], s["status"], s["state"]) for s in one] == [
        ("cmp-1", "nova-compute", "enabled", "up")]
    assert len(one[0]["id"]) == 36   # a UUID from microversion 2.53 on
    assert none == [] and {s["host"] for s in every} == {"cmp-1", "cmp-2"}
