"""A CONNECT-only HTTP proxy on loopback, to see what mlfs asks a proxy for.

Every request's target is recorded in `.targets` ("CONNECT 127.0.0.2:5000",
"GET http://name:80/path"), in order.  A CONNECT to a loopback address
literal is tunnelled (bytes copied both ways until either side closes);
anything else, a name, an address off loopback or a plain proxy request,
is answered with an error and never connected: the proxy cannot be made to
reach beyond this host.  Bounded: at most MAX_CLIENTS connections at a
time, a request head of at most 8 KiB, sockets that time out.
"""

import ipaddress
import select
import socket
import threading

MAX_CLIENTS = 32
HEAD_MAX = 8192
TIMEOUT = 30


def _loopback_literal(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConnectProxy:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(MAX_CLIENTS)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.targets = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def connects(self):
        """The CONNECT targets, in order."""
        with self._lock:
            return [t.split(" ", 1)[1] for t in self.targets if t.startswith("CONNECT ")]

    def close(self):
        self._stop = True
        self.sock.close()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                c.close()
                continue
            threading.Thread(target=self._client, args=(c,), daemon=True).start()

    def _client(self, c):
        try:
            c.settimeout(TIMEOUT)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = c.recv(4096)
                if not chunk or len(head) + len(chunk) > HEAD_MAX:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            if len(parts) != 3:
                return
            method, target = parts[0], parts[1]
            with self._lock:
                self.targets.append("%s %s" % (method, target))
            if method != "CONNECT":
                c.sendall(b"HTTP/1.1 501 CONNECT only\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            if not _loopback_literal(host) or not port.isdigit():
                c.sendall(b"HTTP/1.1 403 Loopback addresses only\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                up = socket.create_connection((host, int(port)), timeout=TIMEOUT)
            except OSError:
                c.sendall(b"HTTP/1.1 502 Unreachable\r\nContent-Length: 0\r\n\r\n")
                return
            rest = head.split(b"\r\n\r\n", 1)[1]
            try:
                c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    up.sendall(rest)
                self._pipe(c, up)
            finally:
                up.close()
        except OSError:
            pass
        finally:
            c.close()
            self._slots.release()

    @staticmethod
    def _pipe(a, b):
        socks = [a, b]
        while True:
            ready, _, _ = select.select(socks, [], [], TIMEOUT)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
