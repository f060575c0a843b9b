"""Sans-I/O protocol layer: framing, heartbeat v3 messages, host and guest machines.

Server-group messaging: sgwire (the messages), sgsession (the host's machine),
sgclient (the guest's); servergroup re-exports all three under the old name.

Standard library only, Python 3.8 syntax, no I/O and no clock reads: time
comes in as an argument (see each module's docstring for its rules).
"""
