"""Server-group messaging under its former single name: a re-export, nothing of its own.

The code lives in three modules; new code imports those directly:

- ``sgwire``: the messages (constants, builders, parsers, validators,
  ProtocolError) and the Received / Malformed / Send / Violation both
  machines share;
- ``sgsession``: the host side's per-guest session machine (``session_step``);
- ``sgclient``: the guest side's client machine (``client_step``).

Kept so that ``from nfvha.protocol import servergroup`` (guest code outside
this project, older modules here) goes on working with every public name it
had; the objects are the same as the modules' own.
"""
from __future__ import annotations

from typing import List

from . import sgclient, sgsession, sgwire
from .sgclient import *  # noqa: F403
from .sgsession import *  # noqa: F403
from .sgwire import *  # noqa: F403

__all__: List[str] = []
__all__ += sgwire.__all__
__all__ += sgsession.__all__  # repeats the four shared names: harmless for import *
__all__ += sgclient.__all__
