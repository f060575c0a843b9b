"""Errors every bus raises, whatever the transport underneath."""
from __future__ import annotations


class BusError(Exception):
    """A call did not get an answer from its endpoint."""


class NoServer(BusError):
    """Nobody serves the target (in-process: no endpoint registered)."""


class BusTimeout(BusError):
    """No answer within the call timeout (server down, busy, or message lost)."""


class RemoteError(BusError):
    """The endpoint raised; carries the remote exception's type name and text.

    Both buses wrap endpoint exceptions in this, so a caller sees the same
    thing embedded and across RabbitMQ (where the original class cannot
    travel).
    """

    def __init__(self, exc_type: str, value: str) -> None:
        super().__init__(f"{exc_type}: {value}")
        self.exc_type = exc_type
        self.value = value
