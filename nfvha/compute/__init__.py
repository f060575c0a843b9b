"""The compute agent: heartbeats the instances of one host.

- agent.py: `ComputeAgent`, the wiring (casts, fault outbox, observers,
  stats, the bus endpoint); nothing here imports it
- pool.py: `ChannelPool`, the one place sessions are made, connected,
  reconnected and forgotten, fed `ChannelSpec`s by an instance source
- sources/: `InstanceSource`s (directory.py: sockets found in a directory;
  libvirt.py: the domains of a libvirtd)
- session.py: `InstanceSession`, one instance's heartbeat channel around the
  host machine; messaging.py: server-group messaging channels
- channel.py: what every guest channel shares (bounded reads and writes)
- discovery.py: finding QEMU chardev sockets in a directory
- outbox.py: `FaultOutbox`, faults called to the controller until acked
- ratelimit.py, samples.py: token buckets, sample rings
- simguest.py: simulated guests for tests and benchmarks (not the guest agent)
"""
