"""The Nova notification options moved from [servergroup] to [nova]; a
config file written for an earlier release keeps working."""
from __future__ import annotations

from pathlib import Path

from oslo_config import cfg

from nfvha.conf import register


def _load(path: Path, text: str) -> cfg.ConfigOpts:
    path.write_text(text)
    conf = cfg.ConfigOpts()
    register(conf)
    conf(["--config-file", str(path)], project="nfvha-test", default_config_files=[])
    return conf


def test_the_old_servergroup_names_still_set_the_nova_options(tmp_path: Path) -> None:
    conf = _load(tmp_path / "old.conf",
                 "[servergroup]\nnova_notifications = true\n"
                 "notification_topics = a,b\nnotification_pool = p\n")
    assert conf.nova.notifications is True
    assert conf.nova.notification_topics == ["a", "b"]
    assert conf.nova.notification_pool == "p"


def test_the_nova_section_is_read_and_defaults_are_off(tmp_path: Path) -> None:
    conf = _load(tmp_path / "none.conf", "")
    assert conf.nova.notifications is False
    assert conf.nova.notification_pool == "nfvha"
    conf = _load(tmp_path / "new.conf", "[nova]\nnotifications = true\n")
    assert conf.nova.notifications is True
