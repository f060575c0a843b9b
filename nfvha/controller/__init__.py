"""nfvha controller: fault store, reporters, REST API (and, from
servergroups.py, server-group membership and routing)."""
from nfvha.controller.service import Controller

__all__ = ["Controller"]
