"""A minimal HTTP/1.1 client for streaming POSTs, built on asyncio.

Why not aiohttp (which vLLM's client uses): there a chunk is timestamped only when the
request's task resumes, after every task woken earlier has parsed its JSON. With 256 streams
receiving a token in the same engine step, the last one is stamped ~9 ms late on one core.

Here, on plain http and Linux, every read comes with the kernel's receive timestamp
(SO_TIMESTAMPNS via recvmsg): when the last skb of that read arrived, whatever the event loop
was doing, however many sockets it served first. Elsewhere (https, or no timestamp)
`data_received` stamps the bytes as the loop reads them. Either way HTTP framing and SSE lines
are parsed in a callback after every socket of that poll is stamped, and the `data:` payloads
go to the caller, which parses the JSON.
Supports http and https, keep-alive, chunked and Content-Length bodies; no proxies.
"""

from __future__ import annotations

import asyncio
import platform
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_ERROR_BODY = 4096
# asm-generic value; Python's socket module does not name it, and other architectures (mips,
# sparc, ...) number it differently. The cmsg carries a struct timespec of CLOCK_REALTIME.
SO_TIMESTAMPNS = 35
KERNEL_STAMPS = sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")
_TS_ANC = socket.CMSG_SPACE(16)
READ_SIZE = 256 * 1024


@dataclass
class Response:
    status: int | None = None
    # Receives [(perf_counter at arrival, `data:` payload), ...] in order. Called from a
    # call_soon callback, i.e. after the event loop has stamped every socket that was
    # readable in the same poll: parsing one stream never delays another's timestamp.
    on_events: Callable[[list[tuple[float, bytes]]], None] | None = None
    body: bytearray = field(default_factory=bytearray)  # non-200 bodies only, truncated
    error: str = ""
    received: int = 0


class _Conn(asyncio.Protocol):
    def __init__(self, pool: Pool):
        self.pool, self.closed = pool, False
        self.transport: asyncio.Transport | _StampedSocket | None = None  # set by connection_made
        self.res: Response | None = None
        self.fut: asyncio.Future | None = None

    def begin(self, res: Response, fut: asyncio.Future) -> None:
        self.res, self.fut = res, fut
        self.buf, self.lines = bytearray(), bytearray()
        self.pending: list[tuple[float, bytes]] = []
        self.inbox: list[tuple[float, bytes]] = []
        self.state, self.left, self.keep_alive = "head", 0, True

    def connection_made(self, transport):
        self.transport = transport
        self.inbox = []

    def connection_lost(self, exc):
        self.closed = True
        self._drain()
        if self.res is not None:
            if self.state == "until_close":
                self._finish()
            else:
                why = f"{type(exc).__name__}: {exc}" if exc else "closed by server"
                self._finish(f"connection dropped: mid-response ({why})")

    def data_received(self, data, stamp: float | None = None):
        # Only stamp and keep: the event loop calls this for every socket that was readable
        # in one poll, in turn, so any work here delays the stamps of the sockets after it
        # (256 streams receiving a token in the same engine step). Parsing runs in _drain,
        # after every socket of this poll has been stamped.
        self.inbox.append((stamp or time.perf_counter(), data))
        if len(self.inbox) == 1:
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        inbox, self.inbox = self.inbox, []
        for now, data in inbox:
            if self.res is None:
                return
            self.res.received += len(data)
            self.buf += data
            try:
                self._parse(now)
            except ValueError as e:
                assert self.transport is not None  # bytes came in: connected
                self.transport.abort()
                self._finish(f"bad HTTP response: {e}")
                return
        if self.res is not None:
            self._flush(self.res)

    def _parse(self, now: float) -> None:
        buf = self.buf
        while self.res is not None:
            if self.state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._head(bytes(buf[:end]).decode("latin-1"))
                del buf[:end + 4]
            elif self.state == "size":
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                size = int(bytes(buf[:i]).split(b";")[0], 16)
                del buf[:i + 2]
                self.state, self.left = ("chunk", size) if size else ("trailer", 0)
            elif self.state == "chunk":
                if not buf:
                    return
                take = min(len(buf), self.left)
                self._body(bytes(buf[:take]), now)
                del buf[:take]
                self.left -= take
                if self.left == 0:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(buf) < 2:
                    return
                del buf[:2]
                self.state = "size"
            elif self.state == "trailer":
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                del buf[:i + 2]
                if i == 0:
                    self._finish()
            elif self.state in ("length", "until_close"):
                if buf:
                    take = len(buf) if self.state == "until_close" else min(len(buf), self.left)
                    self._body(bytes(buf[:take]), now)
                    del buf[:take]
                    self.left -= take
                if self.state == "length" and self.left <= 0:
                    self._finish()
                return

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"status line {lines[0][:80]!r}")
        assert self.res is not None  # _parse runs only while a response is in flight
        self.res.status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.keep_alive = headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = "size"
        elif "content-length" in headers:
            self.state, self.left = "length", int(headers["content-length"])
        else:
            self.state, self.keep_alive = "until_close", False

    def _body(self, data: bytes, now: float) -> None:
        res = self.res
        assert res is not None  # _parse runs only while a response is in flight
        if res.status != 200:
            if len(res.body) < MAX_ERROR_BODY:
                res.body += data[:MAX_ERROR_BODY - len(res.body)]
            return
        self.lines += data
        if b"\n" not in data:
            return
        *complete, rest = self.lines.split(b"\n")
        self.lines = bytearray(rest)
        for line in complete:
            if line.startswith(b"data:"):
                self.pending.append((now, bytes(line[5:]).strip()))

    def _flush(self, res: Response) -> None:
        if res is self.res and self.pending:
            events, self.pending = self.pending, []
            if res.on_events is not None:
                res.on_events(events)

    def _finish(self, error: str = "") -> None:
        res, fut = self.res, self.fut
        assert res is not None  # called only while a response is in flight
        self._flush(res)
        self.res = self.fut = None
        if error:
            res.error = error
        if fut is not None and not fut.done():
            fut.set_result(res)
        if not error and self.keep_alive and not self.closed:
            self.pool.release(self)
        elif not self.closed:
            assert self.transport is not None  # a response was in flight: connected
            self.transport.close()


class _StampedSocket:
    """The part of asyncio.Transport that _Conn uses, over a non-blocking TCP socket read with
    recvmsg, so that each read carries the kernel's receive time (see the module doc)."""

    def __init__(self, loop, sock: socket.socket, conn: _Conn):
        self.loop, self.sock, self.conn = loop, sock, conn
        self.out = bytearray()
        self.kernel_stamps = self.reads = 0
        self._closing = False
        loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(READ_SIZE, _TS_ANC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        if not data:
            self._lose(None)
            return
        now = time.perf_counter()
        stamp = now
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                sec, nsec = struct.unpack("qq", payload[:16])
                # The wall clock's offset read now, not once: NTP slews it against
                # perf_counter by up to 0.5 ms a second.
                kernel = sec + nsec / 1e9 - (time.time() - now)
                if now - 5.0 < kernel <= now:  # else the wall clock stepped meanwhile: use ours
                    stamp = kernel
                    self.kernel_stamps += 1
        self.reads += 1
        self.conn.data_received(data, stamp)

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        if not self.out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lose(exc)
                return
            data = data[sent:]
            if not data:
                return
            self.loop.add_writer(self.sock.fileno(), self._write_ready)
        self.out += data

    def _write_ready(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        del self.out[:sent]
        if not self.out:
            self.loop.remove_writer(self.sock.fileno())

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._lose(None)

    def abort(self) -> None:
        self._lose(None)

    def _lose(self, exc) -> None:
        if self._closing:
            return
        self._closing = True
        self.conn.closed = True  # at once: the pool must not hand out a closing connection
        self.conn.pool.kernel_stamps += self.kernel_stamps
        self.conn.pool.reads += self.reads
        self.loop.remove_reader(self.sock.fileno())
        self.loop.remove_writer(self.sock.fileno())
        self.sock.close()
        self.loop.call_soon(self.conn.connection_lost, exc)


class Pool:
    """Keep-alive connections to one origin. Unbounded: callers cap concurrency."""

    def __init__(self, base_url: str):
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"base URL must be http:// or https://, got {base_url!r}")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if u.scheme == "https" else None
        default = (u.scheme == "https" and self.port == 443) or (u.scheme == "http" and self.port == 80)
        self.host_header = self.host if default else f"{self.host}:{self.port}"
        self.prefix = u.path.rstrip("/")
        self.idle: list[_Conn] = []
        # Reads that carried a kernel receive timestamp, of all reads (closed connections).
        self.kernel_stamps = self.reads = 0

    async def prewarm(self, n: int) -> None:
        """Open up to n idle connections now, so that a burst of requests does not pay for
        n TCP (and TLS) handshakes inside its measured TTFT."""
        need = n - sum(not c.closed for c in self.idle)
        if need > 0:
            conns = await asyncio.gather(*(self._connect() for _ in range(need)))
            self.idle.extend(conns)

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        if self.ssl is None and KERNEL_STAMPS:
            return await self._connect_stamped(loop)
        _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port,
                                               ssl=self.ssl)
        return conn

    async def _connect_stamped(self, loop) -> _Conn:
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        err: OSError | None = None
        for family, type_, proto, _, addr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                await loop.sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                err = exc
                continue
            conn = _Conn(self)
            conn.connection_made(_StampedSocket(loop, sock, conn))
            return conn
        raise err or OSError(f"cannot resolve {self.host}")

    def release(self, conn: _Conn) -> None:
        self.idle.append(conn)

    def request_bytes(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        head = [f"POST {self.prefix}{path} HTTP/1.1", f"Host: {self.host_header}",
                f"Content-Length: {len(body)}", "Accept: text/event-stream"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    async def post(self, request: bytes, timeout_s: float, on_events=None) -> Response:
        """Send a prepared request. Raises asyncio.TimeoutError, and OSError from connect.

        The write happens in the caller's task, right away (asyncio.wait_for would first
        schedule a new task, delaying every write in a burst behind all the others).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for _attempt in range(2):
            reused = False
            while self.idle and not reused:
                conn = self.idle.pop()
                reused = not conn.closed
            if not reused:
                conn = await asyncio.wait_for(self._connect(), max(deadline - loop.time(), 0))
            res = Response(on_events=on_events)
            fut = loop.create_future()
            conn.begin(res, fut)
            assert conn.transport is not None  # _connect returns connected connections
            conn.transport.write(request)
            timer = loop.call_at(deadline, _expire, fut)
            try:
                await fut
            except BaseException:  # timeout or outside cancellation: drop the half response
                conn.res = conn.fut = None
                conn.transport.abort()
                raise
            finally:
                timer.cancel()
            # A kept-alive socket the server closed while idle fails before any byte:
            # retry once on a fresh connection rather than report a spurious error.
            if not (res.error and reused and res.received == 0):
                break
        return res

    def close(self) -> None:
        for conn in self.idle:
            if not conn.closed:
                assert conn.transport is not None  # only connected connections are pooled
                conn.transport.close()
        self.idle.clear()

    def stamp_source(self) -> str:
        """What timestamped the chunks: "kernel" (every read carried the receive time),
        "event loop", or "mixed" (some reads had none), over every read so far, open
        connections included (a sweep asks after each run, with its connections kept)."""
        kernel, reads = self.kernel_stamps, self.reads
        for conn in self.idle:
            if not conn.closed and isinstance(conn.transport, _StampedSocket):
                kernel, reads = kernel + conn.transport.kernel_stamps, reads + conn.transport.reads
        if reads and kernel == reads:
            return "kernel"
        return "mixed" if kernel else "event loop"


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())
