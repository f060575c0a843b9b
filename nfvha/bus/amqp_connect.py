"""Reaching RabbitMQ with an asyncio AMQP client (aio-pika) from the settings
oslo.messaging already has: every host of a ``rabbit://`` transport URL, and
TLS from ``[oslo_messaging_rabbit] ssl*``. Used by the compute casts
(amqp_casts) and the notification publisher (notify)."""
from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote

HEARTBEAT_S = 10  # AMQP heartbeat: a dead broker is noticed within ~2 of these


def amqp_urls(transport_url: str, conf: Any = None) -> list[str]:
    """The AMQP URLs of every host in an oslo ``rabbit://`` transport URL:
    ``amqps://`` (default port 5671) when ``[oslo_messaging_rabbit] ssl`` is
    on, since aiormq picks TLS by the scheme alone and would otherwise
    ignore the SSL context it is given."""
    import oslo_messaging
    from oslo_config import cfg

    conf = conf or cfg.CONF
    parsed = oslo_messaging.TransportURL.parse(conf, transport_url)
    scheme, port = ("amqps", 5671) if _rabbit_opts(conf) is not None else ("amqp", 5672)
    vhost = quote(parsed.virtual_host or "/", safe="")
    urls = []
    for h in parsed.hosts:
        user = quote(h.username or "guest", safe="")
        password = quote(h.password or "guest", safe="")
        urls.append(f"{scheme}://{user}:{password}@{h.hostname or '127.0.0.1'}:"
                    f"{h.port or port}/{vhost}?heartbeat={HEARTBEAT_S}")
    return urls or [f"{scheme}://guest:guest@127.0.0.1:{port}/%2F?heartbeat={HEARTBEAT_S}"]


def _rabbit_opts(conf: Any) -> Any:
    """oslo.messaging's rabbit options if TLS is on, else None."""
    from oslo_config import cfg

    try:
        opts = conf.oslo_messaging_rabbit
        return opts if opts.ssl else None
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None


def ssl_context_from_oslo(conf: Any = None) -> ssl.SSLContext | None:
    """TLS as oslo.messaging's ``[oslo_messaging_rabbit] ssl*`` options say."""
    from oslo_config import cfg

    opts = _rabbit_opts(conf or cfg.CONF)
    if opts is None:
        return None
    context = ssl.create_default_context(cafile=opts.ssl_ca_file or None)
    if not opts.ssl_ca_file:
        # as oslo.messaging (py-amqp) does: without ssl_ca_file the chain is
        # checked against the system's CAs, the host name is not
        context.check_hostname = False
    if opts.ssl_cert_file:
        context.load_cert_chain(opts.ssl_cert_file, opts.ssl_key_file or None)
    return context


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, _, rest = url.partition("://")
    creds, at, hostpart = rest.rpartition("@")
    return f"{scheme}://{creds.split(':')[0]}@{hostpart}" if at else url
