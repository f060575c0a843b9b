"""The compute host asks Nova which channels an instance wants (openstacksdk
against the Nova stand-in, both ways Nova answers: the flavor embedded from
microversion 2.47, or by its id before); the answer is cached; a Nova that
cannot answer is asked again while the answer is still wanted; an instance
Nova does not know asks for nothing."""
from __future__ import annotations

import uuid

from nfvha.compute.flavor import ChannelRequests, LookupFailed, Wanted
from nfvha.controller.reporters._openstack import connect
from nfvha.standins.nova import Flavor, NovaStandin

HB = Flavor("42", "nfvha.small", {"hw:nfvha_heartbeat": "true"})
BOTH = Flavor("43", "stx.small", {"sw:wrs:guest:heartbeat": "True",
                                  "sw:wrs:srv_grp_messaging": "True"})


def _requests(nova: NovaStandin, **kw: float) -> ChannelRequests:
    return ChannelRequests(lambda: connect(auth_type="none", auth={"endpoint": nova.url},
                                           compute_endpoint_override=nova.url + "/v2.1"),
                           retry_base_s=0.05, **kw)


async def test_flavor_extra_specs_decide_embedded_or_by_flavor_id() -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    for max_version in ("2.96", "2.46"):
        async with NovaStandin(flavors={a: HB, b: BOTH},
                               max_version=max_version) as nova:
            req = _requests(nova)
            assert await req.lookup(a) == Wanted(heartbeat=True)
            assert await req.lookup(b) == Wanted(heartbeat=True, messaging=True)
            assert await req.lookup(c) == Wanted()          # m1.tiny asks nothing
            assert await req.lookup(a) == Wanted(heartbeat=True)
            assert req.counters == {"lookups": 3, "cached": 1, "failures": 0}
            extra = [r for r in nova.attempts if r.path.endswith("/os-extra_specs")]
            # before 2.47 the extra specs are a second request
            assert bool(extra) == (max_version == "2.46"), extra


async def test_an_unreachable_nova_is_asked_again_and_an_unknown_server_asks_nothing(
        ) -> None:
    a = str(uuid.uuid4())
    async with NovaStandin(servers={a}, flavors={a: HB}) as nova:
        req = _requests(nova)
        nova.fail_next(3, 503)
        try:
            await req.lookup(a)
        except LookupFailed as exc:
            assert "Unavailable" in str(exc)
        else:
            raise AssertionError("a 503 must not be an answer")
        assert await req.lookup_retrying(a) == Wanted(heartbeat=True)
        assert req.counters["failures"] == 3
        # not a Nova instance: nothing asked, not retried
        assert await req.lookup_retrying(str(uuid.uuid4())) == Wanted()
        # no longer wanted (the domain stopped): gives up
        nova.fail_next(1000, 503)
        req.forget(a)
        calls = []
        assert await req.lookup_retrying(a, still_wanted=lambda: len(calls) < 2
                                         and not calls.append(1)) is None


def test_image_properties_are_read_as_the_sdk_gives_glances_answer() -> None:
    """Glance returns extra properties at the image's top level; openstacksdk's
    Image keeps the unknown ones in .properties. Read through that mapping
    (an SDK-built Image from Glance's JSON); a flavor that asks nothing and
    an image that asks decide together."""
    from openstack.compute.v2.server import Server
    from openstack.image.v2.image import Image

    image_id = str(uuid.uuid4())

    class Compute:
        def get_server(self, server_id: str) -> Server:
            return Server.existing(id=server_id, flavor={"original_name": "m1.small",
                                                         "extra_specs": {}},
                                   image={"id": image_id})

    class Glance:
        def get_image(self, wanted: str) -> Image:
            assert wanted == image_id
            return Image.existing(id=image_id, name="vnf", hw_nfvha_heartbeat="true",
                                  hw_nfvha_messaging="True", hw_qemu_guest_agent="yes")

    class Conn:
        compute, image = Compute(), Glance()

    req = ChannelRequests(Conn)
    assert req._ask(str(uuid.uuid4()), None) == Wanted(heartbeat=True, messaging=True)
