"""RabbitMQ over TLS, as `[oslo_messaging_rabbit] ssl*` configures it: the
oslo.messaging calls and the aio-pika compute casts both go through a port
that speaks only TLS (socat terminating TLS in front of the real broker),
the broker's certificate is checked against `ssl_ca_file` (host name
included), and without a CA file the host name is not checked, as
oslo.messaging does. aiormq chooses TLS by the URL scheme alone: a plain
amqp:// URL with an SSL context silently spoke plaintext before."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from conftest import free_port, require_command, require_rabbitmq
from oslo_config import cfg

from nfvha.bus import make_bus
from nfvha.bus.amqp_connect import amqp_urls, ssl_context_from_oslo

pytestmark = pytest.mark.system


def _cert(directory: Path, name: str, san: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """(rabbit:// URL of a TLS-only port in front of RabbitMQ, its cert, another CA)."""
    url = require_rabbitmq()
    require_command("openssl", "socat")
    cert, key = _cert(tmp_path, "broker", "IP:127.0.0.1")
    other, _ = _cert(tmp_path, "other", "IP:127.0.0.1")
    port = free_port()
    relay = subprocess.Popen(
        ["socat", f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={cert},"
                  f"key={key},verify=0", "TCP:127.0.0.1:5672"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    creds = url.split("://", 1)[1].split("@", 1)[0]
    try:
        yield f"rabbit://{creds}@127.0.0.1:{port}/", cert, other
    finally:
        relay.terminate()
        relay.wait(10)


@pytest.fixture
def rabbit_tls_conf() -> Iterator[Any]:
    from oslo_messaging._drivers.impl_rabbit import rabbit_opts

    cfg.CONF.register_opts(rabbit_opts, group="oslo_messaging_rabbit")

    def configure(ca: Path | None) -> None:
        cfg.CONF.set_override("ssl", True, group="oslo_messaging_rabbit")
        cfg.CONF.set_override("ssl_ca_file", str(ca) if ca else "",
                              group="oslo_messaging_rabbit")

    yield configure
    cfg.CONF.clear_override("ssl", group="oslo_messaging_rabbit")
    cfg.CONF.clear_override("ssl_ca_file", group="oslo_messaging_rabbit")


class Endpoint:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []

    async def ping(self, n: int) -> dict[str, Any]:
        return {"pong": n}

    async def alive(self, **kw: Any) -> None:
        self.got.append(("alive", kw))

    async def resync(self, **kw: Any) -> None:
        self.got.append(("resync", kw))


async def test_calls_and_compute_casts_travel_over_tls(tls_broker, rabbit_tls_conf) -> None:
    url, cert, _other = tls_broker
    rabbit_tls_conf(cert)
    assert all(u.startswith("amqps://") for u in amqp_urls(url))
    prefix = f"nfvhatls-{uuid.uuid4().hex[:8]}"
    controller_bus = make_bus(url, prefix=prefix, call_timeout=10)
    compute_bus = make_bus(url, prefix=prefix, call_timeout=10)
    ctl, cmp_ = Endpoint(), Endpoint()
    await controller_bus.start()
    await compute_bus.start()
    try:
        await controller_bus.serve_controller(ctl)
        await compute_bus.serve_compute("h1", cmp_)
        assert await compute_bus.call_controller("ping", n=7) == {"pong": 7}      # oslo
        await compute_bus.fanout_controller("alive", host="h1")
        await controller_bus.cast_compute("h1", "resync")                          # aio-pika
        for _ in range(200):
            if ctl.got and cmp_.got:
                break
            await asyncio.sleep(0.05)
        assert ctl.got == [("alive", {"host": "h1"})]
        assert cmp_.got == [("resync", {})]
    finally:
        await compute_bus.stop()
        await controller_bus.stop()


async def test_the_port_speaks_only_tls_and_the_certificate_is_checked(
        tls_broker, rabbit_tls_conf) -> None:
    url, cert, other = tls_broker
    plain = amqp_urls(url)[0].replace("amqps://", "amqp://")
    with pytest.raises((OSError, asyncio.TimeoutError, aio_pika.exceptions.AMQPError)):
        await asyncio.wait_for(aio_pika.connect(plain, timeout=3), 10)

    rabbit_tls_conf(other)                      # a CA that did not sign the broker's cert
    with pytest.raises(Exception, match="(?i)certificate"):
        await asyncio.wait_for(aio_pika.connect(amqp_urls(url)[0], timeout=3,
                                                ssl_context=ssl_context_from_oslo()), 10)

    rabbit_tls_conf(cert)
    conn = await aio_pika.connect(amqp_urls(url)[0], timeout=5,
                                  ssl_context=ssl_context_from_oslo())
    await conn.close()

    # no CA file: the host name is not checked (oslo.messaging's rule); the
    # chain still is, against the system's CAs, which never signed ours
    rabbit_tls_conf(None)
    ctx = ssl_context_from_oslo()
    assert ctx is not None and ctx.check_hostname is False
    with pytest.raises(Exception, match="(?i)certificate"):
        await asyncio.wait_for(aio_pika.connect(amqp_urls(url)[0], timeout=3,
                                                ssl_context=ctx), 10)
