"""Stand-ins for external systems that cannot run on a development machine.

Each module imitates one system's published HTTP API closely enough that
our real clients (openstacksdk, httpx) talk to it unchanged; each records
what it received so tests can assert on the exact JSON, and each can be told
to fail the next N requests to exercise retries.  Never used in production.
"""
from nfvha.standins._http import Received, Standin

__all__ = ["Received", "Standin"]
