"""A small Server-Sent Events client over a plain socket, for GET /events: it can stop reading
(a slow reader), shrink its receive buffer, and drop the connection at any point."""

import json
import socket
import time


class SseClosed(Exception):
    """The server ended the stream (or the connection broke)."""


class SseStream:
    """One GET /events. status and headers are read at open; events() yields the frames."""

    def __init__(self, url, path="/events", headers=None, rcvbuf=None, timeout=10.0):
        host, port = url.split("//", 1)[1].split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, int(port)))
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""  # bytes received, not yet parsed as chunks
        self.body = b""  # the de-chunked body, not yet parsed as frames
        self.ended = False
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode().split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if h)}
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        if self.status != 200:
            n = int(self.headers.get("content-length", "0"))
            while len(self.raw) < n:
                self._recv()
            self.error = json.loads(self.raw[:n])
            self.close()

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise SseClosed("connection closed")
        self.raw += data

    def _read_until(self, marker):
        while marker not in self.raw:
            self._recv()
        head, self.raw = self.raw.split(marker, 1)
        return head

    def _dechunk(self):
        """Moves whole chunks from raw to body; True when the last chunk came."""
        if not self.chunked:
            self.body += self.raw
            self.raw = b""
            return False
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return False
            self.body += rest[:size]
            self.raw = rest[size + 2:]
            if size == 0:
                return True
        return False

    def frames(self, deadline=None):
        """Yields each frame as a dict (id, event, data parsed as JSON) or {"comment": text}
        until the stream ends (then SseClosed) or the deadline (monotonic) passes (then returns)."""
        while True:
            if not self.ended:
                self.ended = self._dechunk()
            while b"\n\n" in self.body:
                block, self.body = self.body.split(b"\n\n", 1)
                frame = {}
                for line in block.decode().split("\n"):
                    if line.startswith(":"):
                        frame.setdefault("comment", line[1:].strip())
                        continue
                    k, _, v = line.partition(":")
                    v = v[1:] if v.startswith(" ") else v
                    frame[k] = json.loads(v) if k == "data" else v
                yield frame
            if self.ended:
                raise SseClosed("the stream ended")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.sock.settimeout(left)
            try:
                self._recv()
            except socket.timeout:
                return
            except (ConnectionResetError, BrokenPipeError) as e:
                raise SseClosed(str(e))

    def events(self, deadline=None):
        """The frames that are events or the online marker (comments skipped)."""
        for f in self.frames(deadline):
            if "event" in f:
                yield f

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def open_stream(api_url, token=None, ticket=None, after=None, last_id=None, **kw):
    """GET /events with a bearer token or a ticket, from ?after= or a Last-Event-ID."""
    headers = {}
    query = []
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if ticket:
        query.append(f"ticket={ticket}")
    if after is not None:
        query.append(f"after={after}")
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    path = "/events" + ("?" + "&".join(query) if query else "")
    return SseStream(api_url, path, headers, **kw)
