from __future__ import annotations

from oslo_config import cfg

GROUP = "api"
OPTS = [
    cfg.HostAddressOpt("listen", default="127.0.0.1", help="Address the REST API listens on."),
    cfg.PortOpt("port", default=8780, help="Port of the REST API (0 = pick a free one)."),
    cfg.StrOpt("auth_strategy", default="noauth", choices=["noauth", "keystone"],
               help="noauth: whoever reaches the port may use the API (keep it on "
                    "127.0.0.1 or a closed network). keystone: requests that change "
                    "state (votes and notices to guests, server groups, retiring hosts) "
                    "need an X-Auth-Token that Keystone validates and that holds one of "
                    "admin_roles; reads too with protect_reads."),
    cfg.StrOpt("keystone_cloud", default=None,
               help="With auth_strategy = keystone: the clouds.yaml entry (or "
                    "'envvars') of nfvha's service user, whose token validates "
                    "callers' tokens (GET /v3/auth/tokens)."),
    cfg.ListOpt("admin_roles", default=["admin"],
                help="With auth_strategy = keystone: roles, any one of which lets a "
                     "token use the protected requests."),
    cfg.BoolOpt("protect_reads", default=False,
                help="With auth_strategy = keystone: GET /v1/... needs a token too "
                     "(the dashboard then cannot read the API; /healthz and /metrics "
                     "stay open)."),
    cfg.FloatOpt("token_cache_s", default=60.0, min=0.0,
                 help="How long Keystone's answer for a token is remembered (never "
                      "past the token's expiry)."),
    cfg.IntOpt("max_body_bytes", default=1024 * 1024, min=1024,
               help="Largest request body the REST API reads; a larger one is "
                    "answered 413 as soon as it passes this size."),
    cfg.IntOpt("max_list", default=10000, min=1,
               help="Largest page (?limit=) of the list endpoints that page "
                    "(/v1/instances, /v1/server-groups); without ?limit= they "
                    "return everything."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
