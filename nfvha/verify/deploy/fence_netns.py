#!/usr/bin/python3
"""A fence agent for nfvha's namespace cluster nodes (standard library only).

pacemaker-fenced runs fence agents from /usr/sbin only; `CorosyncCluster`
copies this file into its work dir and bind-mounts it over
/usr/sbin/fence_legacy *inside each node's private mount namespace* (the
system's file is never touched; outside our nodes nothing changes), and
configures a `stonith:fence_legacy` device with `map_file`.

Fence agent API (as fence-agents use it): parameters as `key=value` lines on
stdin (or `-o ACTION` on the command line); actions metadata, monitor,
status, list, on, off, reboot. `map_file` holds `<node name> <supervisor
pid>` lines; off/reboot of a node = SIGKILL to every process below its
supervisor (corosync, pacemaker's daemons, and the resources' own
processes, which the supervisor adopts as a child subreaper), then to the
supervisor — what a power switch does to a host. A fenced node stays off
(no "on").
"""
import os
import signal
import sys
import time

METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_legacy" shortdesc="nfvha: power off a namespace cluster node">
<longdesc>SIGKILLs a namespace node's supervisor and everything below it.</longdesc>
<parameters>
<parameter name="action" unique="0" required="0"><content type="string" default="reboot"/>
<shortdesc lang="en">Fencing action</shortdesc></parameter>
<parameter name="port" unique="0" required="0"><content type="string"/>
<shortdesc lang="en">Node to fence</shortdesc></parameter>
<parameter name="plug" unique="0" required="0"><content type="string"/>
<shortdesc lang="en">Node to fence</shortdesc></parameter>
<parameter name="map_file" unique="0" required="1"><content type="string"/>
<shortdesc lang="en">Node name to supervisor pid map</shortdesc></parameter>
</parameters>
<actions>
<action name="on"/><action name="off"/><action name="reboot"/><action name="status"/>
<action name="list"/><action name="monitor"/><action name="metadata"/>
</actions>
</resource-agent>
"""


def children() -> dict:
    kids: dict = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root: int) -> list:
    kids, out, todo = children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        return st[st.index("(") + 1:st.rindex(")")] + " " + st.rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return "?"


def power_off(root: int, timeout: float = 5.0) -> None:
    """Everything below the supervisor first, until the supervisor (a child
    subreaper) has reaped it all, then the supervisor. Killed the other way
    round, the orphans go to PID 1, which on this VM reaps only every ~1.5 s:
    a resource's zombie then passes the `anything` agent's `kill -0`, and a
    start elsewhere says "already running" and starts nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        below = [p for p in tree(root) if p != root] if os.path.exists(f"/proc/{root}") else []
        if not below:
            break
        for sig in (signal.SIGSTOP, signal.SIGKILL):   # stopped first: nothing respawns
            for p in below:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)
    try:
        os.kill(root, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> int:
    args = {}
    if len(sys.argv) > 2 and sys.argv[1] == "-o":
        args["action"] = sys.argv[2]
    elif sys.stdin is not None and not sys.stdin.isatty():
        for line in sys.stdin.read().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                args[k.strip()] = v.strip()
    action = args.get("action", "reboot")
    if action == "metadata":
        print(METADATA)
        return 0
    nodes = {}
    try:
        with open(args.get("map_file", "")) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    nodes[parts[0]] = int(parts[1])
    except OSError:
        return 1
    if action in ("monitor", "on"):
        return 0
    if action == "list":
        print("\n".join(nodes))
        return 0
    target = args.get("port") or args.get("plug") or args.get("nodename")
    if target not in nodes:
        return 1
    pid = nodes[target]
    alive = os.path.exists(f"/proc/{pid}")
    if action == "status":
        return 0 if alive else 2           # fence-agents: 0 on, 2 off
    if action in ("off", "reboot"):
        log = args.get("map_file", "") + ".log"
        with open(log, "a") as f:
            f.write(f"{time.time():.3f} {action} {target}: supervisor {pid} alive {alive}, "
                    f"below it {[(p, _comm(p)) for p in tree(pid) if p != pid] if alive else []}\n")
        if alive:
            power_off(pid)
        with open(log, "a") as f:
            f.write(f"{time.time():.3f} {target} off\n")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
