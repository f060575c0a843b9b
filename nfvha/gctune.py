"""Garbage-collector settings for nfvha's long-running services.

A service allocates a few short-lived objects per message, and with
CPython's default thresholds the cyclic collector runs hundreds of times a
second and now and then walks every object: a full collection of a
controller process (oslo.messaging, SQLAlchemy, FastAPI loaded: ~140,000
objects) takes ~60 ms, a stall of every timer and delivery at once. Objects
that exist once the service has started are frozen out of the walk, and
the thresholds make collections rarer. Standard library only.
"""
from __future__ import annotations

import gc


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 100)
