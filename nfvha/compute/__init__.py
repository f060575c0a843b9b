"""The compute agent: heartbeats the instances of one host.

- agent.py: `ComputeAgent` (discovery, sessions, casts, fault outbox, stats)
- session.py: `InstanceSession`, one instance's channel around the host machine
- discovery.py: finding QEMU chardev sockets in a directory
- outbox.py: `FaultOutbox`, faults called to the controller until acked
- ratelimit.py, samples.py: token buckets, sample rings
- simguest.py: simulated guests for tests and benchmarks (not the guest agent)
"""
