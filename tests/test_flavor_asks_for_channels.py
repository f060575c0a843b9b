"""Which channels an instance asks for: flavor extra specs (nfvha's and
StarlingX's) and image properties, read as Nova and Glance store them
(strings); anything malformed asks for nothing."""
from __future__ import annotations

import pytest

from nfvha.compute.flavor import Wanted, wanted


@pytest.mark.parametrize("specs, props, expect", [
    ({"hw:nfvha_heartbeat": "true"}, None, Wanted(heartbeat=True)),
    ({"hw:nfvha_heartbeat": "True", "hw:nfvha_messaging": "true"}, {},
     Wanted(heartbeat=True, messaging=True)),
    ({"sw:wrs:guest:heartbeat": "True"}, None, Wanted(heartbeat=True)),
    ({"sw:wrs:srv_grp_messaging": "True"}, None, Wanted(messaging=True)),
    ({}, {"hw_nfvha_heartbeat": "true"}, Wanted(heartbeat=True)),
    ({"hw:nfvha_heartbeat": "false"}, {"hw_nfvha_messaging": "yes"}, Wanted(messaging=True)),
    ({"hw:nfvha_heartbeat": "no"}, None, Wanted()),
    ({"hw:nfvha_heartbeat": ["true"]}, None, Wanted()),
    ({"hw:nfvha_heartbeat": None}, {"hw_nfvha_heartbeat": 1}, Wanted()),
    (None, None, Wanted()),
    ("hw:nfvha_heartbeat=true", ["hw_nfvha_heartbeat"], Wanted()),
    ({"hw:cpu_policy": "dedicated"}, {"hw_qemu_guest_agent": "yes"}, Wanted()),
])
def test_flavor_and_image_ask_for_channels(specs: object, props: object,
                                           expect: Wanted) -> None:
    assert wanted(specs, props) == expect
