"""Prometheus metrics of one controller (its own registry, so several
controllers in one process — tests, all-in-one — do not collide)."""
from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nfvha.protocol.host import FAULT_KINDS

RECOVERY_BUCKETS = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
RECOVERY_STATUSES = ("issued", "succeeded", "failed", "skipped")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0, 300.0)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, sinks: Iterable[str] = (),
                 methods: Iterable[str] = ()) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.faults = Counter("nfvha_faults_received", "Fault events stored, by kind",
                              ["kind"], registry=r)
        self.duplicates = Counter("nfvha_faults_duplicate",
                                  "Fault events received again (compute retries)", registry=r)
        self.invalid = Counter("nfvha_reports_invalid",
                               "Reports from computes refused as malformed", ["method"],
                               registry=r)
        self.attempts = Counter("nfvha_delivery_attempts", "Delivery attempts, by sink",
                                ["sink"], registry=r)
        self.failures = Counter("nfvha_delivery_failures",
                                "Failed delivery attempts (final=true: rejected for good)",
                                ["sink", "final"], registry=r)
        self.latency = Histogram("nfvha_delivery_latency_seconds",
                                 "Fault received by the controller → acknowledged by the sink",
                                 ["sink"], buckets=LATENCY_BUCKETS, registry=r)
        self.resyncs = Counter("nfvha_compute_resyncs",
                               "Full instance lists asked of a compute whose digest differed "
                               "from the store", registry=r)
        self.pending = Gauge("nfvha_deliveries_pending",
                             "Deliveries this controller is working on", ["sink"], registry=r)
        self.suppressed = Counter("nfvha_deliveries_suppressed",
                                  "Deliveries not made: a Nova operation in progress "
                                  "explained the fault (planned.py)", ["sink"], registry=r)
        self.compute_up = Gauge("nfvha_compute_up",
                                "1 while the host's compute agent reports, 0 once it has been "
                                "silent for [heartbeat] agent_down_after_s (its guests are "
                                "not heartbeated)", ["host"], registry=r)
        self.compute_last_seen = Gauge("nfvha_compute_last_seen_timestamp_seconds",
                                       "When the host's compute agent last reported (Unix time)",
                                       ["host"], registry=r)
        self.compute_silences = Counter("nfvha_compute_silences",
                                        "Times a compute agent went silent", ["host"],
                                        registry=r)
        self.starved = Gauge("nfvha_instances_starved",
                             "Instances whose guests get too little CPU to answer their "
                             "heartbeat in time (a host condition, not a VM fault), by "
                             "compute host", ["host"], registry=r)
        # Recovery (controller/recovery/): the sink labels its mode's series
        # when it is bound (recovery_mode), before the controller starts
        self.recovery_actions = Counter(
            "nfvha_recovery_actions", "Recovery actions by mode, action (reset, destroy, "
            "nova_reboot, nova_stop; none when the fault needed none) and status reached "
            "(issued, succeeded: the guest heartbeats again, failed, skipped)",
            ["mode", "action", "status"], registry=r)
        self.recovery_seconds = Histogram(
            "nfvha_recovery_seconds", "Fault detected → the guest heartbeats again after "
            "the action (both on the compute's clock)", buckets=RECOVERY_BUCKETS, registry=r)
        self.recovery_exhausted = Counter(
            "nfvha_recovery_exhausted", "Instances whose recovery was exhausted "
            "([recovery] max_actions within window_s): no action until re-armed", registry=r)
        # Every series we know of exists from the start, at 0: Prometheus's
        # increase() cannot see a counter's first step when its series
        # appears already at 1, so an alert on the first fault a sink
        # rejects for good would never fire.
        for kind in FAULT_KINDS:
            self.faults.labels(kind)
        for method in (*methods, "nova_notification"):
            self.invalid.labels(method)
        for sink in sinks:
            for metric in (self.attempts, self.latency, self.pending, self.suppressed):
                metric.labels(sink)
            for final in ("true", "false"):
                self.failures.labels(sink, final)

    def recovery_mode(self, mode: str, actions: Iterable[str]) -> None:
        for action in (*actions, "none"):
            for status in RECOVERY_STATUSES:
                self.recovery_actions.labels(mode, action, status)

    def forget_host(self, host: str) -> None:
        for metric in (self.compute_up, self.compute_last_seen, self.compute_silences):
            try:
                metric.remove(host)
            except KeyError:
                pass
