"""A forwarding HTTP proxy in front of a real docker-registry that can
misbehave on purpose: answer 503 or 429 (with Retry-After), cut a blob
download after N bytes, ignore Range (answer 200 with the whole body, as
some registries and CDNs do), hold requests back for a while or until released, or redirect blob GETs to a "blob store" on
another loopback host (as registries redirect to object storage).  Every request it
sees is recorded with its headers, so tests can assert what mlfs sent where.

It also works as an http_proxy (absolute-form request targets), to show
that mlfs honours the proxy environment variables.  Loopback only."""

import http.client
import http.server
import re
import threading
import time
import urllib.parse


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: tests read .seen instead
        pass

    def _record(self):
        self.server.owner.seen.append(
            # A header sent more than once is recorded as HTTP folds it: the values joined by ", "
            {"method": self.command, "path": self.path,
             "headers": {k.lower(): ", ".join(self.headers.get_all(k)) for k in set(self.headers.keys())}})

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self._record()
        owner = self.server.owner
        if owner.handle(self):
            return
        target = self.path
        if target.startswith("http://"):  # used as an http_proxy
            u = urllib.parse.urlsplit(target)
            host, port = u.hostname, u.port or 80
            target = u.path + ("?" + u.query if u.query else "")
        else:
            host, port = owner.upstream
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        if owner.ignores_range(self.path):
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        back = owner.misrange_for(self.path)
        if back and "Range" in headers and headers["Range"].startswith("bytes="):
            start = int(headers["Range"][6:].split("-")[0])
            headers["Range"] = "bytes=%d-" % max(0, start - back)
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request(self.command, target, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        cut = owner.take_cut(self.path) if resp.status == 200 else None
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client hung up mid-body (mlfs drops a 200 answering its
            # Range request at once): nothing to report.
            self.close_connection = True


HOLD_MAX = 120


class FaultProxy:
    """Forwards to upstream (host, port) on 127.0.0.1:<port>, or on `bind`."""

    def __init__(self, upstream, bind="127.0.0.1"):
        self.upstream = upstream
        self.seen = []
        self._lock = threading.Lock()
        self._faults = []      # [regex, status, headers, remaining, pass first N]
        self._cuts = []        # [regex, nbytes, remaining]
        self._redirect = None  # (regex, base_url)
        self._misrange = None  # (regex, bytes): answer Range requests from that much earlier
        self._norange = None   # regex: forward without Range, so the answer is 200 + the whole body
        self._delays = []      # [regex, seconds, remaining]
        self._hold = None      # (regex, threading.Event): matching requests wait for release()
        self._store = None     # callable(path) -> bytes|None, when acting as a blob store
        self.httpd = http.server.ThreadingHTTPServer((bind, 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.host = f"{bind}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- faults -----------------------------------------------------------
    def fail(self, pattern, status, times=1, headers=None, after=0):
        """Answer `status` to `times` requests matching pattern, once `after`
        matching ones went through untouched."""
        with self._lock:
            self._faults.append([re.compile(pattern), status, headers or {}, times, after])

    def cut(self, pattern, nbytes, times=1):
        with self._lock:
            self._cuts.append([re.compile(pattern), nbytes, times])

    def misrange(self, pattern, back):
        """Answer ranged GETs with bytes from `back` earlier than asked (a
        206 whose Content-Range is not the one requested)."""
        self._misrange = (re.compile(pattern), back)

    def delay(self, pattern, seconds, times=1):
        """Hold `times` matching requests back for `seconds` before serving them."""
        with self._lock:
            self._delays.append([re.compile(pattern), seconds, times])

    def hold(self, pattern):
        """Hold every matching request back until release() (or at most
        HOLD_MAX seconds): a registry that has not answered yet."""
        self._hold = (re.compile(pattern), threading.Event())

    def release(self):
        if self._hold:
            self._hold[1].set()

    def ignore_range(self, pattern=r"/blobs/sha256:"):
        """Drop the Range header of matching requests before forwarding them:
        the registry answers 200 with the whole blob, as a server that does
        not support ranges would."""
        self._norange = re.compile(pattern)

    def ignores_range(self, path):
        r = self._norange
        return bool(r and r.search(path))

    def misrange_for(self, path):
        m = self._misrange
        return m[1] if m and m[0].search(path) else 0

    def redirect_blobs(self, base_url, pattern=r"/blobs/sha256:"):
        self._redirect = (re.compile(pattern), base_url)

    def serve_blobs_from(self, lookup):
        """Act as an object store: answer every GET with lookup(path)'s bytes."""
        self._store = lookup

    def take_cut(self, path):
        with self._lock:
            for c in self._cuts:
                if c[2] > 0 and c[0].search(path):
                    c[2] -= 1
                    return c[1]
        return None

    def handle(self, h):
        """Serves the request itself when a fault applies; True if it did."""
        wait = 0
        with self._lock:
            for d in self._delays:
                if d[2] > 0 and d[0].search(h.path):
                    d[2] -= 1
                    wait = d[1]
                    break
        if wait:
            time.sleep(wait)
        hold = self._hold
        if hold and hold[0].search(h.path):
            hold[1].wait(HOLD_MAX)
        with self._lock:
            fault = None
            for f in self._faults:
                if f[3] > 0 and f[0].search(h.path):
                    if f[4] > 0:
                        f[4] -= 1
                        continue
                    f[3] -= 1
                    fault = f
                    break
        if fault:
            body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
            h.send_response(fault[1])
            for k, v in fault[2].items():
                h.send_header(k, v)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return True
        if self._store is not None:
            data = self._store(h.path)
            h.send_response(200 if data is not None else 404)
            h.send_header("Content-Length", str(len(data or b"")))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data or b"")
            return True
        # Redirect only requests the registry would have served: the auth
        # check happens upstream first, so forward unauthenticated ones.
        if self._redirect and self._redirect[0].search(h.path) and h.headers.get("Authorization"):
            loc = self._redirect[1] + h.path + "?X-Signature=fake"
            h.send_response(307)
            h.send_header("Location", loc)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return True
        return False

    def requests(self, pattern=""):
        rx = re.compile(pattern)
        return [r for r in self.seen if rx.search(r["path"])]
