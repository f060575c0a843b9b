"""In-guest server-group messaging: Python API, local socket API, CLI.

- ``GroupClient`` speaks the StarlingX base layer v2 / server-group app layer
  (nfvha.protocol.sgclient) over the virtio-serial port
  ``/dev/virtio-ports/cgcs.messaging``: ``broadcast(data)``, ``status()``,
  ``on_broadcast(cb)``, ``on_notification(cb)``, ``listen()``.
- ``GroupSocketServer`` shares the port with any language through a UNIX
  socket (``/run/nfvha/group.sock``), one JSON object per line each way:
  ``{"op": "broadcast", "data": "..."}``, ``{"op": "status"}``,
  ``{"op": "subscribe"}``. A virtio port can be open in only one process, so
  this is how several programs in the guest use it at once.
- ``add_group_parser`` / ``group_main``: ``nfvha-guest group broadcast|status|listen|serve``.

Standard library only, Python 3.8. No threads: one poll loop moves bytes, the
protocol decisions are made by the sans-I/O client machine.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from nfvha.protocol import sgclient
from nfvha.protocol.framing import FrameError, LineDecoder, encode

DEFAULT_DEVICE = "/dev/virtio-ports/cgcs.messaging"
DEFAULT_SOCKET = "/run/nfvha/group.sock"
READ_SIZE = 65536
MAX_LINE = 8192  # one request line on the local socket
MAX_OUTBUF = 1 << 20  # a subscriber this far behind is dropped, never waited for

Event = Dict[str, Any]


class GroupError(Exception):
    """A request that could not be done (invalid data, host not connected, ...)."""


class GroupTimeout(GroupError):
    def __init__(self, members: List[dict]) -> None:
        super().__init__("status query timed out before status_response_done")
        self.members = members  # what arrived before the timeout


def _event(out: Any) -> Optional[Event]:
    if isinstance(out, sgclient.BroadcastReceived):
        return {"type": "broadcast", "source_instance": out.source_instance, "data": out.data}
    if isinstance(out, sgclient.NotificationReceived):
        return {"type": "notification", "data": out.data}
    if isinstance(out, sgclient.Nacked):
        return {"type": "nack", "orig_msg_type": out.orig_msg_type, "log_msg": out.log_msg}
    return None


class GroupClient:
    def __init__(
        self,
        device: str = DEFAULT_DEVICE,
        clock: Callable[[], float] = time.monotonic,
        write_timeout: float = 2.0,
    ) -> None:
        self.device = device
        self.clock = clock
        self.write_timeout = write_timeout
        self._fd: Optional[int] = None
        self._decoder = LineDecoder(max_size=MAX_LINE)
        self._state = sgclient.client()
        self._deadline: Optional[float] = None
        self._status_cbs: Dict[int, Callable[[List[dict], bool], None]] = {}
        self._on_broadcast: List[Callable[[str, str], None]] = []
        self._on_notification: List[Callable[[dict], None]] = []
        self._on_nack: List[Callable[[str, str], None]] = []
        self._reopen_at = 0.0
        self.violations = 0

    # --- channel --------------------------------------------------------------

    def open(self) -> None:
        if self._fd is None:
            if self.clock() < self._reopen_at:
                raise GroupError(f"{self.device}: host side hung up, retrying shortly")
            try:
                self._fd = os.open(self.device, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
            except OSError as exc:
                raise GroupError(f"cannot open {self.device}: {exc.strerror}") from exc
            self._decoder = LineDecoder(max_size=MAX_LINE)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> GroupClient:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def fileno(self) -> int:
        self.open()
        assert self._fd is not None
        return self._fd

    def _hang_up(self) -> None:
        # Host agent gone (EOF / EIO): reopen later, it may come back. The pause
        # matters: a port without a host reads EOF at once, over and over.
        self.close()
        self._reopen_at = self.clock() + 0.5

    def _write(self, data: bytes) -> None:
        fd = self.fileno()
        end = self.clock() + self.write_timeout
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                self._hang_up()
                raise GroupError(f"write to {self.device} failed: {exc.strerror}") from exc
            left = end - self.clock()
            if left <= 0:
                raise GroupError("host side not reading (no host agent connected?)")
            select.select([], [fd], [], min(left, 0.1))

    def _apply(self, event: Any) -> List[Event]:
        self._state, outs, self._deadline = sgclient.client_step(self._state, event, self.clock())
        events: List[Event] = []
        for o in outs:
            if isinstance(o, sgclient.Send):
                self._write(encode(o.msg))
            elif isinstance(o, sgclient.Rejected):
                raise GroupError(o.reason)
            elif isinstance(o, sgclient.StatusResult):
                cb = self._status_cbs.pop(o.seq, None)
                if cb is not None:
                    cb(o.members, o.complete)
            elif isinstance(o, sgclient.Violation):
                self.violations += 1
            else:
                ev = _event(o)
                if ev is not None:
                    events.append(ev)
                    self._dispatch(ev)
        return events

    def _dispatch(self, ev: Event) -> None:
        if ev["type"] == "broadcast":
            for cb in self._on_broadcast:
                cb(ev["source_instance"], ev["data"])
        elif ev["type"] == "notification":
            for cb in self._on_notification:
                cb(ev["data"])
        else:
            for cb in self._on_nack:
                cb(ev["orig_msg_type"], ev["log_msg"])

    # --- API ----------------------------------------------------------------------

    def on_broadcast(self, cb: Callable[[str, str], None]) -> None:
        """``cb(source_instance, data)`` for every broadcast from a peer."""
        self._on_broadcast.append(cb)

    def on_notification(self, cb: Callable[[dict], None]) -> None:
        """``cb(data)`` with ``{payload, event_type, priority, timestamp}``."""
        self._on_notification.append(cb)

    def on_nack(self, cb: Callable[[str, str], None]) -> None:
        self._on_nack.append(cb)

    def broadcast(self, data: str) -> None:
        """Send ``data`` (str, ≤ 3050 bytes, no newline) to every other member.
        Best effort; raises GroupError if invalid or the host is not there."""
        self._apply(sgclient.Broadcast(data))

    def start_status(self, timeout: float, cb: Callable[[List[dict], bool], None]) -> int:
        """Asks for the group's state; ``cb(members, complete)`` runs from poll()."""
        seq = self._state.next_seq
        self._status_cbs[seq] = cb
        try:
            self._apply(sgclient.StatusRequest(timeout))
        except GroupError:
            self._status_cbs.pop(seq, None)
            raise
        return seq

    def status(self, timeout: float = 5.0) -> List[dict]:
        """State of every member, this VM included. Raises GroupTimeout."""
        result: List[Tuple[List[dict], bool]] = []
        self.start_status(timeout, lambda m, c: result.append((m, c)))
        while not result:
            self.poll(max(0.0, (self._deadline or self.clock()) - self.clock()))
        members, complete = result[0]
        if not complete:
            raise GroupTimeout(members)
        return members

    def poll(self, timeout: float = 0.0) -> List[Event]:
        """Waits up to ``timeout`` s for the host; returns the events that came
        (callbacks have run) and finishes overdue status queries."""
        if self._deadline is not None:
            timeout = min(timeout, max(0.0, self._deadline - self.clock()))
        try:
            fd = self.fileno()
        except GroupError:
            time.sleep(min(timeout, 0.5))  # device not there yet (host agent down)
            return self._apply(sgclient.Tick())
        events: List[Event] = []
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                data = None
            except OSError as exc:
                if exc.errno not in (errno.EIO, errno.EBADF, errno.ECONNRESET):
                    raise
                data = b""
            if data == b"":
                self._hang_up()
            elif data:
                for item in self._decoder.feed(data):
                    if isinstance(item, FrameError):
                        events += self._apply(sgclient.Malformed(item.reason))
                    else:
                        events += self._apply(sgclient.Received(item))
        events += self._apply(sgclient.Tick())
        return events

    def listen(self, timeout: Optional[float] = None) -> Iterator[Event]:
        """Yields broadcast / notification / nack events; stops after ``timeout``
        seconds without one (forever when None)."""
        while True:
            events = self.poll(1.0 if timeout is None else timeout)
            if not events and timeout is not None:
                return
            yield from events


# --- local socket API -------------------------------------------------------------


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = LineDecoder(max_size=MAX_LINE)
        self.out = bytearray()
        self.subscribed = False
        self.dead = False
        self.eof = False  # the app half-closed: answer what is pending, then close
        self.pending = 0  # status answers still owed


class GroupSocketServer:
    """Serves the local API on a UNIX socket, one JSON object per line.

    Requests → replies:
      {"op":"broadcast","data":S}        → {"ok":true} | {"ok":false,"error":...}
      {"op":"status","timeout":T?}       → {"ok":true,"members":[...],"complete":B}
      {"op":"subscribe"}                 → {"ok":true}, then one line per event:
                                           {"type":"broadcast","source_instance","data"}
                                           {"type":"notification","data":{...}}
                                           {"type":"nack","orig_msg_type","log_msg"}
    Every reply to a request carries its "id" if the request had one.
    """

    def __init__(self, client: GroupClient, path: str = DEFAULT_SOCKET,
                 max_clients: int = 64) -> None:
        self.client = client
        self.path = path
        self.max_clients = max_clients
        self._conns: Dict[int, _Conn] = {}
        self._listener: Optional[socket.socket] = None
        client.on_broadcast(lambda src, data: self._publish(
            {"type": "broadcast", "source_instance": src, "data": data}))
        client.on_notification(lambda data: self._publish({"type": "notification", "data": data}))
        client.on_nack(lambda orig, log: self._publish(
            {"type": "nack", "orig_msg_type": orig, "log_msg": log}))

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        try:
            os.unlink(self.path)  # a stale socket from a previous run
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        os.chmod(self.path, 0o660)
        s.listen(16)
        s.setblocking(False)
        self._listener = s

    def close(self) -> None:
        for c in list(self._conns.values()):
            c.sock.close()
        self._conns.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def serve(self, until: Optional[Callable[[], bool]] = None) -> None:
        if self._listener is None:
            self.start()
        while until is None or not until():
            self.serve_once(0.2)

    def serve_once(self, timeout: float) -> None:
        assert self._listener is not None
        rlist: List[Any] = [self._listener] + [
            c.sock for c in self._conns.values() if not c.eof]
        wlist = [c.sock for c in self._conns.values() if c.out]
        try:
            dev = self.client.fileno()
            rlist.append(dev)
        except GroupError:
            dev = None
        if self.client._deadline is not None:
            timeout = min(timeout, max(0.0, self.client._deadline - self.client.clock()))
        readable, writable, _ = select.select(rlist, wlist, [], timeout)
        if dev is not None and dev in readable:
            self._safe_poll()
        elif dev is None or self.client._deadline is not None:
            self._safe_poll()  # timers (status timeouts) and reopening
        for s in readable:
            if s is self._listener:
                self._accept()
            elif isinstance(s, socket.socket):
                self._read(s)
        for s in writable:
            conn = self._conns.get(s.fileno())
            if conn is not None:
                self._flush(conn)
        for fd, conn in list(self._conns.items()):
            if conn.eof and not conn.pending and not conn.out:
                conn.dead = True
            if conn.dead:
                conn.sock.close()
                del self._conns[fd]

    def _safe_poll(self) -> None:
        try:
            self.client.poll(0.0)
        except GroupError:
            pass  # host side away: requests get the error, the server keeps going

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        if len(self._conns) >= self.max_clients:
            sock.close()
            return
        sock.setblocking(False)
        self._conns[sock.fileno()] = _Conn(sock)

    def _read(self, sock: socket.socket) -> None:
        conn = self._conns.get(sock.fileno())
        if conn is None:
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            conn.eof = True
            return
        for item in conn.decoder.feed(data):
            if isinstance(item, FrameError):
                self._reply(conn, {"ok": False, "error": "bad request: " + item.reason})
            else:
                self._request(conn, item)

    def _request(self, conn: _Conn, req: dict) -> None:
        rid = req.get("id")
        extra = {"id": rid} if rid is not None else {}
        op = req.get("op")
        try:
            if op == "broadcast":
                self.client.broadcast(req.get("data"))  # type: ignore[arg-type]
                self._reply(conn, dict(extra, ok=True))
            elif op == "status":
                timeout = req.get("timeout", 5.0)
                if not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
                    raise GroupError("timeout must be a number in (0, 60]")
                def answer(members: List[dict], complete: bool) -> None:
                    conn.pending -= 1
                    self._reply(conn, dict(extra, ok=True, members=members, complete=complete))

                self.client.start_status(float(timeout), answer)
                conn.pending += 1
            elif op == "subscribe":
                conn.subscribed = True
                self._reply(conn, dict(extra, ok=True))
            else:
                raise GroupError("unknown op; use broadcast, status or subscribe")
        except GroupError as exc:
            self._reply(conn, dict(extra, ok=False, error=str(exc)))

    def _publish(self, ev: Event) -> None:
        for conn in self._conns.values():
            if conn.subscribed:
                self._reply(conn, ev)

    def _reply(self, conn: _Conn, obj: dict) -> None:
        if conn.dead:
            return
        conn.out += json.dumps(obj, separators=(",", ":")).encode("ascii") + b"\n"
        if len(conn.out) > MAX_OUTBUF:
            conn.dead = True  # a reader that stopped reading must not hold memory
            return
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            n = conn.sock.send(conn.out)
            del conn.out[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            conn.dead = True


# --- socket client (what the CLI uses when a server runs) ----------------------------


def socket_request(path: str, req: dict, timeout: float = 10.0) -> dict:
    """One request over the local API; returns the first reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(READ_SIZE)
            if not chunk:
                raise GroupError("server closed the connection")
            buf += chunk
        return json.loads(buf.split(b"\n", 1)[0])


def socket_subscribe(path: str) -> Iterator[Event]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        s.sendall(b'{"op":"subscribe"}\n')
        f = s.makefile("rb")
        first = json.loads(f.readline() or b"{}")
        if not first.get("ok"):
            raise GroupError(str(first.get("error", "subscribe refused")))
        for line in f:
            yield json.loads(line)
    finally:
        s.close()


# --- CLI -------------------------------------------------------------------------------


def add_group_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``group`` to an argparse subparsers object (nfvha-guest's)."""
    p = subparsers.add_parser("group", help="server-group messaging")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Fills an existing ``group`` parser (what nfvha/guest/cli.py calls)."""
    p.add_argument("--device", default=DEFAULT_DEVICE, help="virtio-serial port")
    p.add_argument("--socket", default=DEFAULT_SOCKET,
                   help="local API socket; used when it exists (a server owns the port)")
    sub = p.add_subparsers(dest="group_cmd")
    sub.required = True
    b = sub.add_parser("broadcast", help="send DATA to every other member")
    b.add_argument("data")
    s = sub.add_parser("status", help="print the state of every member (JSON lines)")
    s.add_argument("--timeout", type=float, default=5.0)
    li = sub.add_parser("listen", help="print broadcasts and notifications (JSON lines)")
    li.add_argument("--count", type=int, default=0, help="stop after N events (0: never)")
    sv = sub.add_parser("serve", help="serve the local socket API on --socket")
    sv.add_argument("--for-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    p.set_defaults(func=group_main)


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def group_main(args: argparse.Namespace) -> int:
    """Runs ``nfvha-guest group ...``; returns the exit status."""
    via_socket = args.group_cmd != "serve" and os.path.exists(args.socket)
    try:
        if args.group_cmd == "serve":
            client = GroupClient(args.device)
            server = GroupSocketServer(client, args.socket)
            server.start()
            end = time.monotonic() + args.for_seconds if args.for_seconds else None
            try:
                server.serve(None if end is None else (lambda: time.monotonic() >= end))
            finally:
                server.close()
                client.close()
            return 0
        if args.group_cmd == "broadcast":
            if via_socket:
                r = socket_request(args.socket, {"op": "broadcast", "data": args.data})
                if not r.get("ok"):
                    raise GroupError(str(r.get("error")))
            else:
                with GroupClient(args.device) as c:
                    c.broadcast(args.data)
            return 0
        if args.group_cmd == "status":
            if via_socket:
                r = socket_request(args.socket, {"op": "status", "timeout": args.timeout},
                                   timeout=args.timeout + 5)
                if not r.get("ok"):
                    raise GroupError(str(r.get("error")))
                members, complete = r["members"], r["complete"]
            else:
                with GroupClient(args.device) as c:
                    try:
                        members, complete = c.status(args.timeout), True
                    except GroupTimeout as exc:
                        members, complete = exc.members, False
            for m in members:
                _print(m)
            if not complete:
                sys.stderr.write("status: timed out, answer incomplete\n")
                return 2
            return 0
        if args.group_cmd == "listen":
            n = 0
            if via_socket:
                events: Iterator[Event] = socket_subscribe(args.socket)
            else:
                events = GroupClient(args.device).listen()
            for ev in events:
                _print(ev)
                n += 1
                if args.count and n >= args.count:
                    break
            return 0
    except (GroupError, OSError) as exc:
        sys.stderr.write(f"nfvha-guest group {args.group_cmd}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


main = group_main  # the name nfvha/guest/cli.py looks for
