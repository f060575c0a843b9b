"""docs/protocol.md specifies every message type and field the code accepts
and sends, with the code's limits and value lists.

The expectations are read from the code itself (heartbeat.FIELDS and its
value lists, what the server-group builders produce and what its parsers
read, the port and socket names), so a field added to the code without a
line in the document fails here, and so does a field the document lists
that the code does not know.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Dict, Set

import pytest

from nfvha.compute import domain_xml
from nfvha.conf import heartbeat as heartbeat_conf
from nfvha.conf import servergroup as servergroup_conf
from nfvha.controller import nova_notifications
from nfvha.controller.servergroups import ServerGroups
from nfvha.protocol import heartbeat as hb
from nfvha.protocol import host, sgsession, sgwire

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
G2H, H2G = "guest → host", "host → guest"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC_PATH.read_text(encoding="utf-8")


def sections(text: str) -> Dict[str, str]:
    """'#### heading' -> its text up to the next heading of any level."""
    out: Dict[str, str] = {}
    for part in re.split(r"(?m)^(?=#{1,4} )", text):
        if part.startswith("#### "):
            heading, _, body = part.partition("\n")
            assert heading[5:] not in out, f"two sections {heading!r}"
            out[heading[5:].strip()] = body
    return out


def rows(body: str) -> Dict[str, list]:
    """The rows of a section's table, by the `name` in their first cell."""
    out: Dict[str, list] = {}
    for line in body.splitlines():
        m = re.match(r"^\| `([^`]+)` \|(.*)\|\s*$", line)
        if m:
            assert m.group(1) not in out, f"{m.group(1)} listed twice"
            out[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return out


def section(doc: str, heading: str) -> str:
    found = sections(doc)
    assert heading in found, f"docs/protocol.md has no section '#### {heading}'"
    return found[heading]


def value_text(doc: str, cell: str) -> str:
    """A limit cell and the value-list sections it links to."""
    text = cell
    for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", cell):
        title = {"corrective-actions": "Corrective actions", "event-types": "Event types",
                 "vote-results": "Vote results"}[anchor]
        text += section(doc, title)
    return text


# ---- heartbeat ------------------------------------------------------------------------

def test_every_heartbeat_message_type_has_its_section_with_exactly_its_fields(doc: str) -> None:
    assert set(hb.MSG_TYPES) == set(hb.FIELDS) == hb.GUEST_TO_HOST | hb.HOST_TO_GUEST
    for msg_type in hb.MSG_TYPES:
        direction = G2H if msg_type in hb.GUEST_TO_HOST else H2G
        documented = rows(section(doc, f"`{msg_type}` ({direction})"))
        assert set(documented) == set(hb.FIELDS[msg_type]), msg_type


def test_each_heartbeat_field_has_the_codes_type_limit_and_values(doc: str) -> None:
    for msg_type, fields in hb.FIELDS.items():
        direction = G2H if msg_type in hb.GUEST_TO_HOST else H2G
        documented = rows(section(doc, f"`{msg_type}` ({direction})"))
        for name, kind in fields.items():
            where = f"{msg_type}.{name}"
            assert name in documented, f"{where} is not documented"
            type_cell, limit_cell = documented[name][0], documented[name][1]
            if kind[0] == "int":
                assert type_cell == "integer", where
                continue
            _, limit, allowed = kind
            assert type_cell == "string", where
            assert f"≤ {limit} bytes" in limit_cell, where
            for value in allowed or ():
                assert f"`{value}`" in value_text(doc, limit_cell), f"{where}: {value}"


def test_heartbeat_common_fields_version_and_limits(doc: str) -> None:
    common = rows(section(doc, "Common fields"))
    assert set(common) == set(hb._COMMON) | {"msg_type"}
    assert f"`{hb.VERSION}`" in common["version"][1]
    assert f"`{hb.REVISION}`" in common["revision"][1]
    assert str(hb.UINT32_MAX) in doc
    assert str(host.NONCE_MAX) in rows(section(doc, f"`{hb.CHALLENGE}` ({H2G})"))[
        "heartbeat_challenge"][1]
    for values in (hb.CORRECTIVE_ACTIONS, hb.EVENT_TYPES, hb.VOTE_RESULTS,
                   hb.NOTIFICATION_TYPES, hb.HEALTH_VALUES):
        for value in values:
            assert f"`{value}`" in doc, value
    # the notice time each event gets by default
    for event, field in host.NOTICE_FIELD.items():
        assert re.search(rf"`{field}` for\s[^.;]*`{event}`", doc), (event, field)


# ---- framing and the channel ------------------------------------------------------------

def test_size_limits_and_channel_names(doc: str) -> None:
    framing = doc.split("## Framing", 1)[1].split("\n## ", 1)[0]
    assert f"| {hb.MAX_MSG} |" in framing and f"| {sgwire.MAX_MSG} |" in framing
    for port in domain_xml.PORT_KINDS:
        assert f"`{port}`" in doc, port
        name = domain_xml.socket_name(port, "<instance-name>", "<instance-uuid>")
        assert f"`{name}`" in doc, name
    assert f"longer than {domain_xml.UNIX_PATH_MAX} bytes" in doc
    defaults = {o.name: o.default for o in heartbeat_conf.OPTS}
    assert f"`{defaults['instances_dir']}`" in doc
    assert f"`{defaults['socket_pattern']}`" in doc
    sg_defaults = {o.name: o.default for o in servergroup_conf.OPTS}
    assert f"`{sg_defaults['socket_pattern']}`" in doc


# ---- server group ------------------------------------------------------------------------

SG_MESSAGES = {
    (sgwire.BROADCAST, G2H): sgwire.broadcast("x"),
    (sgwire.STATUS_QUERY, G2H): sgwire.status_query(1),
    (sgwire.BROADCAST, H2G): sgwire.broadcast_to_guest("x", "instance-1"),
    (sgwire.NOTIFICATION, H2G): sgwire.notification({}),
    (sgwire.STATUS_RESPONSE, H2G): sgwire.status_response(1, {}),
    (sgwire.STATUS_RESPONSE_DONE, H2G): sgwire.status_response_done(1),
    (sgwire.NACK, H2G + ", server group"): sgwire.nack("broadcast", "why"),
}


def test_every_server_group_message_has_its_section_with_exactly_its_fields(doc: str) -> None:
    # every type of each direction the code knows has a builder above
    assert {t for t, d in SG_MESSAGES if d == G2H} == set(sgwire.GUEST_TO_HOST)
    assert {t for t, d in SG_MESSAGES if d.startswith(H2G)} == set(sgwire.HOST_TO_GUEST)
    for (msg_type, direction), msg in SG_MESSAGES.items():
        documented = rows(section(doc, f"`{msg_type}` ({direction})"))
        assert set(documented) == set(msg) - {"version", "msg_type"}, (msg_type, direction)
    common = rows(section(doc, "Server-group common fields"))
    assert set(common) == {"version", "msg_type"}
    assert f"`{sgwire.VERSION}`" in common["version"][1]


def test_the_base_layer_envelope(doc: str) -> None:
    envelope = rows(section(doc, "Base layer envelope"))
    assert set(envelope) == set(sgwire.wrap({}))
    assert f"`{sgwire.VERSION}`" in envelope["version"][1]
    for field in ("source_addr", "dest_addr"):
        for addr in (sgwire.ADDR_SERVER_GROUP, sgwire.ADDR_HEARTBEAT):
            assert f"`{addr}`" in envelope[field][1]


def test_server_group_limits(doc: str) -> None:
    def cell(msg_type: str, direction: str, field: str) -> str:
        return rows(section(doc, f"`{msg_type}` ({direction})"))[field][1]

    assert f"≤ {sgwire.MAX_DATA} bytes" in cell(sgwire.BROADCAST, G2H, "data")
    assert str(sgwire.MAX_SEQ) in cell(sgwire.STATUS_QUERY, G2H, "seq")
    assert f"≤ {sgwire.MAX_TYPE_ECHO}" in cell(sgwire.NACK, H2G + ", server group", "orig_msg_type")
    assert f"≤ {sgwire.MAX_LOG_MSG}" in cell(sgwire.NACK, H2G + ", server group", "log_msg")


def _keys_read(func: object) -> Set[str]:
    """String keys a function reads from dicts: x.get("k") and x["k"]."""
    keys: Set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(func))):  # type: ignore[arg-type]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            keys.add(node.args[0].value)
        elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
              and isinstance(node.slice.value, str)):
            keys.add(node.slice.value)
    return keys


def test_every_field_the_server_group_parsers_read_is_documented(doc: str) -> None:
    read = set()
    for func in (sgwire.unwrap, sgwire.parse_guest_app, sgwire.parse_host_app, sgwire.msg_type_of,
                 sgsession.session_step):
        read |= _keys_read(func)
    assert {"seq", "orig_msg_type", "source_instance"} <= read  # the walk finds them
    for key in read:
        assert f"`{key}`" in doc, key


def test_notification_data_and_status_members(doc: str) -> None:
    groups = ServerGroups()
    groups.set_group("g", "g", ["11111111-1111-1111-1111-111111111111", "instance-2"])
    groups.update_instance("11111111-1111-1111-1111-111111111111", name="instance-1",
                           host="compute-1", state="active")
    member = rows(section(doc, "Status member"))
    assert set(member) == set(groups.status("instance-1")[0])
    notification = section(doc, "Notification data")
    _, data = groups.on_heartbeat("11111111-1111-1111-1111-111111111111", "enabled",
                                  "2026-12-02T10:00:00Z", health="healthy")
    assert data is not None
    assert set(rows(notification)) == set(data)
    for key in (*data["payload"], *nova_notifications.PEER_FIELDS):
        assert f"`{key}`" in notification, key
    assert f"`{data['event_type']}`" in notification
    for state in (host.WAITING, host.ENABLED, host.FAILED, host.DISABLED):
        assert f"`{state}`" in notification and f"`{state}`" in doc


def test_every_link_inside_the_document_has_its_heading(doc: str) -> None:
    slugs: Set[str] = set()
    for heading in re.findall(r"(?m)^#{1,6} (.+)$", doc):
        # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n, unique = 0, slug
        while unique in slugs:
            n += 1
            unique = f"{slug}-{n}"
        slugs.add(unique)
    for anchor in re.findall(r"\]\(#([^)]+)\)", doc):
        assert anchor in slugs, anchor
