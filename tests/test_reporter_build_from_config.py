"""reporters.build: the sinks an operator names in nfvha.conf, configured
from their option groups; a missing URL or an unknown name is a clear error."""
from __future__ import annotations

import pytest
from oslo_config import cfg

from nfvha.conf import reporters as reporter_opts
from nfvha.controller import reporters


@pytest.fixture
def conf():
    c = cfg.ConfigOpts()
    reporter_opts.register(c)
    c([], project="nfvha-test", default_config_files=[])
    return c


def test_builds_each_named_sink(conf):
    conf.set_override("url", "http://127.0.0.1:9/hook", group="webhook")
    conf.set_override("inspector_url", "http://127.0.0.1:9", group="doctor")
    conf.set_override("url", "http://127.0.0.1:9", group="vitrage")
    conf.set_override("transport_url", "rabbit://guest:guest@127.0.0.1:9/", group="aodh")
    built = reporters.build(list(reporters.SINKS), conf)
    assert [r.name for r in built] == list(reporters.SINKS)
    assert all(isinstance(r, reporters.Reporter) for r in built)
    by = {r.name: r for r in built}
    assert by["webhook"].url == "http://127.0.0.1:9/hook"
    assert by["doctor"].url == "http://127.0.0.1:9/events"
    assert by["vitrage"].url == "http://127.0.0.1:9/v1/event"


def test_webhook_url_argument_wins(conf):
    [hook] = reporters.build(["webhook"], conf, webhook_url="http://127.0.0.1:9/x")
    assert hook.url == "http://127.0.0.1:9/x"


@pytest.mark.parametrize("name,error", [
    ("webhook", "webhook.*url"), ("doctor", "inspector_url"), ("vitrage", "vitrage.*url"),
    ("aodh", "RabbitMQ"),
    ("pagerduty", "unknown reporter"),
])
def test_missing_setting_or_unknown_name_is_a_clear_error(conf, name, error):
    with pytest.raises(ValueError, match=error):
        reporters.build([name], conf)
