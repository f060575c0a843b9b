"""Real HA deployments the verification scenarios run against (issue 4).

- `pacemaker.PacemakerCluster`: a private single-node Pacemaker/Corosync
  cluster manager with process resources, fault hooks and alert timestamps.
- `netns`: network namespaces, veth/bridge LAN, in-namespace sockets and
  rtnetlink address watching.
- `keepalived.VrrpPair`: keepalived VRRP between two namespaces holding a
  VIP, services and keepalived supervised by the Pacemaker cluster.
- `rabbitmq_consumers.ConsumerGroup`: redundant consumers of a durable
  RabbitMQ queue, a confirming publisher, loss/redelivery accounting.

All APIs are synchronous (blocking); call them from a thread
(`asyncio.to_thread`) inside an event loop. Everything needs root except
the RabbitMQ deployment. Notes and measured figures: docs/deploy-notes.md.
"""
