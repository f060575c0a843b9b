"""PairRunner over real ports: two guests' GroupClients on socat ptys, a relay
playing the compute/controller side with the real session machine. Real time,
generous margins."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

from nfvha.guest import group
from nfvha.guest import splitbrain as sb
from nfvha.protocol import sgsession, sgwire
from nfvha.protocol.framing import FrameError, LineDecoder, encode
from tests.conftest import require_command

NAMES = ("instance-p", "instance-q")


class Relay:
    """Routes broadcasts between the two guests and answers status queries."""

    def __init__(self, socks):
        self.conns = {}
        for name, path in socks.items():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            end = time.monotonic() + 10
            while True:
                try:
                    s.connect(path)
                    break
                except OSError:
                    assert time.monotonic() < end
                    time.sleep(0.02)
            self.conns[name] = s
        self.running = {n: True for n in NAMES}
        self.lock = threading.Lock()
        self.stop = False
        self.threads = [threading.Thread(target=self._serve, args=(n,), daemon=True)
                        for n in NAMES]
        for t in self.threads:
            t.start()

    def deliver(self, name, app):
        with self.lock:
            try:
                self.conns[name].sendall(encode(sgsession.for_guest(app)))
            except OSError:
                pass

    def _serve(self, name):
        sock, dec = self.conns[name], LineDecoder()
        state = sgsession.session(sgsession.SessionConfig(
            instance=name, rate_per_s=1000, burst=1000, status_rate_per_s=1000,
            status_burst=1000))
        sock.settimeout(0.2)
        while not self.stop:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            for item in dec.feed(data):
                ev = sgsession.Malformed(item.reason) if isinstance(item, FrameError) else \
                    sgsession.Received(item)
                state, outs = sgsession.session_step(state, ev, time.monotonic())
                for o in outs:
                    if isinstance(o, sgsession.ToController) and o.kind == "broadcast":
                        peer = NAMES[1 - NAMES.index(name)]
                        self.deliver(peer, sgwire.broadcast_to_guest(o.payload["data"], name))
                    elif isinstance(o, sgsession.ToController):
                        seq = o.payload["seq"]
                        for n in NAMES:
                            up = self.running[n]
                            self.deliver(name, sgwire.status_response(seq, {
                                "instance_name": n, "state": "active" if up else "stopped",
                                "power_state": "running" if up else "shutdown"}))
                        self.deliver(name, sgwire.status_response_done(seq))


def test_pair_runners_elect_one_and_fail_over_on_platform_report(tmp_path):
    require_command("socat")
    procs, socks, devs = [], {}, {}
    for n in NAMES:
        socks[n], devs[n] = str(tmp_path / f"{n}.sock"), str(tmp_path / f"{n}.dev")
        procs.append(subprocess.Popen(
            ["socat", f"UNIX-LISTEN:{socks[n]}", f"PTY,link={devs[n]},raw,echo=0"],
            stderr=subprocess.DEVNULL))
    relay = Relay(socks)
    stops = {n: threading.Event() for n in NAMES}
    runners, threads = {}, []
    try:
        for n in NAMES:
            end = time.monotonic() + 10
            while not os.path.exists(devs[n]):
                assert time.monotonic() < end
                time.sleep(0.02)
        for n in NAMES:
            peer = NAMES[1 - NAMES.index(n)]
            cfg = sb.PairConfig(me=n, peer=peer, nonce=n + "-1", peer_uuid="uuid-" + peer,
                                interval=0.1, lease=0.4, hold=0.5, status_timeout=1.0)
            runners[n] = sb.PairRunner(group.GroupClient(devs[n]), cfg)
            t = threading.Thread(target=runners[n].run, args=(stops[n].is_set,), daemon=True)
            threads.append(t)
            t.start()
        end = time.monotonic() + 15
        seen_two = False
        while time.monotonic() < end:
            roles = [r.role for r in runners.values()]
            seen_two |= roles.count(sb.ACTIVE) > 1
            if roles.count(sb.ACTIVE) == 1:
                break
            time.sleep(0.01)
        assert [r.role for r in runners.values()].count(sb.ACTIVE) == 1
        # stays one for a while (sampled)
        for _ in range(100):
            roles = [r.role for r in runners.values()]
            seen_two |= roles.count(sb.ACTIVE) > 1
            time.sleep(0.01)
        assert not seen_two
        active = next(n for n in NAMES if runners[n].role == sb.ACTIVE)
        survivor = NAMES[1 - NAMES.index(active)]
        # the active VM is stopped by the platform: its runner stops, Nova says so
        stops[active].set()
        relay.running[active] = False
        relay.deliver(survivor, sgwire.notification({
            "payload": {"instance_id": "uuid-" + active, "display_name": active, "state": "stopped",
                        "power_state": "shutdown"},
            "event_type": "compute.instance.update", "priority": "INFO", "timestamp": "t"}))
        end = time.monotonic() + 15
        while runners[survivor].role != sb.ACTIVE and time.monotonic() < end:
            time.sleep(0.01)
        assert runners[survivor].role == sb.ACTIVE
    finally:
        for e in stops.values():
            e.set()
        for t in threads:
            t.join(5)
        relay.stop = True
        for p in procs:
            p.terminate()
            p.wait(5)
