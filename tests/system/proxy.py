"""A TCP relay for tests: listens on a free loopback port and passes bytes both ways to a target port.
cut() closes every connection it relays at once, as a dying server or a broken network would, while
the calls on them are in flight; new connections are relayed again right after, or, with hold, only
once resume() is called (their bytes wait in the socket until then)."""
import socket
import threading


class CuttingProxy:
    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.open = []  # sockets of the connections relayed now
        self.held = []  # clients accepted while holding
        self.holding = False
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                if self.holding:
                    self.held.append(client)
                    continue
            self._relay(client)

    def _relay(self, client):
        try:
            server = socket.create_connection(self.target, timeout=5)
            server.settimeout(None)
        except OSError:
            client.close()
            return
        with self.lock:
            if self.closed:
                client.close()
                server.close()
                return
            self.open += [client, server]
        for src, dst in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            self._close(s)

    def _close(self, s):
        with self.lock:
            if s in self.open:
                self.open.remove(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def _take_held(self):
        with self.lock:
            self.holding = False
            held, self.held = self.held, []
        return held

    def cut(self, hold=False):
        """Close every relayed connection now; returns how many there were. With hold, new ones
        wait until resume()."""
        with self.lock:
            victims = list(self.open)
            self.holding = hold
        for s in victims:
            self._close(s)
        return len(victims) // 2

    def resume(self):
        """Relay the connections accepted while holding, and new ones at once."""
        held = self._take_held()
        for client in held:
            self._relay(client)
        return len(held)

    def close(self):
        with self.lock:
            self.closed = True
        self.listener.close()
        self.cut()
        for client in self._take_held():
            client.close()
