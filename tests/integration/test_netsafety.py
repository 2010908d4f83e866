"""Where mlfs lets an image or a registry send it (issue 10, part 2).

Foreign-layer URLs come from whoever wrote the image, redirects and token
realms from whoever runs the registry: without a rule, either could make
the mounting host request anything it can reach (blind SSRF: cloud
metadata at 169.254.169.254, services on loopback or the local network).
The rule (fetch/netpolicy.c): only http(s); no step down from https to
http; a host other than the registry's own is reached only at a public
address, or, for redirects and realms, in the registry's own class
(loopback here); layer URLs only at public addresses; `--insecure` lifts
the address rule.  Credentials never go to a plain-HTTP token realm off
loopback.  Untrusted text reaches the terminal escaped.  Behind a proxy,
which resolves names itself, a checked hop is pinned to the address mlfs
checked: the proxy is asked to CONNECT to that address, not to the name.

Each "nothing connected" check uses a bare TCP listener that records every
connection, so a refusal is seen to happen before any byte leaves.
"""

import gzip
import hashlib
import io
import json
import socket
import ssl
import tarfile
import threading
import http.server

import pytest

from conftest import auth_json
from connectproxy import ConnectProxy
from faultproxy import FaultProxy
from helpers import assert_mlfs_error, assert_ok, unshare_wrap
from registry import Registry, RegistryClient

MT_V2S2 = "application/vnd.docker.distribution.manifest.v2+json"
MT_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class Listener:
    """A TCP server on (bind, port) that records each connection's first
    bytes and answers 500: it shows whether anything reached it at all."""

    def __init__(self, bind="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.host = "%s:%d" % (bind, self.port)
        self.connections = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(2)
            data = b""
            try:
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                c.sendall(b"HTTP/1.1 500 Listener\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.connections.append(data)
            c.close()

    def close(self):
        self._stop = True
        self.sock.close()


@pytest.fixture
def listener():
    ln = Listener()
    yield ln
    ln.close()


def hosts_file(tmp_path, *entries):
    path = str(tmp_path / "hosts")
    with open(path, "w") as f:
        f.write("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
        for addr, name in entries:
            f.write("%s %s\n" % (addr, name))
    return path


# -- foreign-layer URLs ---------------------------------------------------------

def _layer():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"a foreign layer's file\n"
        info = tarfile.TarInfo("etc/foreign")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, mtime=0)


@pytest.fixture(scope="module")
def foreign_reg(request, tmp_path_factory):
    """A registry that accepts foreign layers with any http(s) URL; push(tag, urls)."""
    reg = Registry(str(tmp_path_factory.mktemp("netsafety-foreign")), extra_config=[
        "validation:", "  manifests:", "    urls:", "      allow:", "        - ^https?://",
    ]).start()
    request.addfinalizer(reg.stop)
    client = RegistryClient(reg.url)
    raw, blob = _layer()
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}).encode()
    cdigest = client.push_blob("foreign", cfg)

    def push(tag, urls):
        m = {"schemaVersion": 2, "mediaType": MT_V2S2,
             "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": len(cfg)},
             "layers": [{"mediaType": MT_FOREIGN, "size": len(blob), "urls": urls,
                         "digest": "sha256:" + hashlib.sha256(blob).hexdigest()}]}
        client.put_manifest("foreign", tag, json.dumps(m).encode(), MT_V2S2)
        return reg.host + "/foreign:" + tag

    return push


def test_foreign_url_plain_http_on_loopback_refused(mlfs, foreign_reg, listener):
    """Plain HTTP to a loopback layer URL used to be allowed ("the URL is on
    loopback"): it is the very SSRF target, now refused without --insecure."""
    ref = foreign_reg("http-loopback", ["http://%s/layer" % listener.host])
    r = mlfs("pull", "--keep-blobs", ref)
    assert_mlfs_error(r, "refusing")
    assert listener.connections == [], "mlfs connected to the layer URL"


def test_foreign_url_https_loopback_literal_refused(mlfs, foreign_reg, listener):
    ref = foreign_reg("https-literal", ["https://%s/layer" % listener.host])
    r = mlfs("pull", "--keep-blobs", ref)
    line = assert_mlfs_error(r, "refusing")
    assert "loopback" in line, line
    assert listener.connections == [], "mlfs connected to the layer URL"


def test_foreign_url_name_checked_at_connect(mlfs, foreign_reg, listener):
    """A name, not a literal: the address is checked where curl connects
    (CURLOPT_OPENSOCKETFUNCTION), so DNS cannot swap it after a check."""
    ref = foreign_reg("https-name", ["https://localhost:%d/layer" % listener.port])
    r = mlfs("pull", "--keep-blobs", ref)
    line = assert_mlfs_error(r, "refusing")
    assert "loopback" in line, line
    assert listener.connections == [], "mlfs connected to the layer URL"


def test_foreign_url_insecure_lifts_the_rule(mlfs, foreign_reg, listener):
    """With --insecure the address rule is off: the loopback URL is reached
    (the listener is no TLS server, so the pull fails after connecting)."""
    ref = foreign_reg("https-name-insecure", ["https://localhost:%d/layer" % listener.port])
    r = mlfs("pull", "--keep-blobs", "--insecure", ref)
    assert_mlfs_error(r)
    assert listener.connections, "the layer URL was not tried"


def test_foreign_url_refused_then_next_url_tried(mlfs, foreign_reg, listener):
    """A refused URL does not end the list: the next one is tried (and
    refused too, which the message shows)."""
    ref = foreign_reg("two-urls", ["https://localhost:%d/first" % listener.port,
                                   "https://127.0.0.2:%d/second" % listener.port])
    line = assert_mlfs_error(mlfs("pull", "--keep-blobs", ref), "refusing")
    assert "127.0.0.2" in line and "/second" in line, line
    assert listener.connections == []


# -- redirects ------------------------------------------------------------------

@pytest.fixture
def front(bearer):
    """A proxy before the bearer registry (its redirects need a token)."""
    p = FaultProxy(("127.0.0.1", bearer.registry.port))
    yield p
    p.close()


def pull_public(mlfs, front, *args, **kw):
    return mlfs("pull", "--keep-blobs", "--platform", "linux/arm64", *args,
                front.host + "/public/demo:latest", **kw)


@pytest.mark.parametrize("target,kind", [
    ("http://169.254.169.254", "link-local"),
    ("http://10.255.255.1", "private"),
    ("http://[fe80::1]", "link-local"),
    ("http://0.0.0.0:1", None),          # 0.0.0.0 reaches this host: loopback, allowed for a loopback registry
])
def test_redirect_to_internal_address_refused(mlfs, front, target, kind):
    front.redirect_blobs(target)
    r = pull_public(mlfs, front, timeout=120)
    if kind is None:
        # Allowed by the rule (same class as the registry), and port 1 refuses:
        # a connection error, not a refusal by mlfs.
        line = assert_mlfs_error(r)
        assert "refusing" not in line, line
        return
    line = assert_mlfs_error(r, "refusing")
    assert kind in line, line


def test_redirect_by_name_to_link_local_refused(mlfs, front, tmp_path):
    """metadata.test -> 169.254.169.254 (hosts file in a private mount
    namespace): only the connected address can tell."""
    front.redirect_blobs("http://metadata.test")
    r = pull_public(mlfs, front, timeout=120,
                    wrap=unshare_wrap(hosts_file(tmp_path, ("169.254.169.254", "metadata.test"))))
    line = assert_mlfs_error(r, "refusing")
    assert "169.254.169.254" in line and "link-local" in line, line


@pytest.mark.parametrize("target", ["file:///etc", "gopher://127.0.0.1:1", "dict://127.0.0.1:1"])
def test_redirect_to_other_scheme_refused(mlfs, front, target):
    front.redirect_blobs(target)
    assert_mlfs_error(pull_public(mlfs, front), "only http")


@pytest.fixture
def tls_redirector(tls_setup, tmp_path):
    """An HTTPS server named mlfs-tls.test (the test CA in a certs.d of its
    own) that answers /v2/ and redirects everything else to .target."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path == "/v2/":
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            self.send_response(302)
            self.send_header("Location", srv.target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_setup.certs["cert"], tls_setup.certs["key"])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.daemon_threads = True
    srv.target = None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    certs = tmp_path / "certs.d"
    d = certs / ("%s:%d" % (tls_setup.hostname, srv.server_address[1]))
    d.mkdir(parents=True)
    with open(tls_setup.certs["ca"], "rb") as f:
        (d / "ca.crt").write_bytes(f.read())
    srv.ref = "%s:%d/x:latest" % (tls_setup.hostname, srv.server_address[1])
    srv.wrap = unshare_wrap(tls_setup.hosts, str(certs))
    yield srv
    srv.shutdown()
    srv.server_close()


def test_https_to_http_redirect_refused(mlfs, tls_redirector, listener):
    tls_redirector.target = "http://" + listener.host
    r = mlfs("inspect", tls_redirector.ref, wrap=tls_redirector.wrap)
    assert_mlfs_error(r, "down to plain http")
    assert listener.connections == [], "mlfs followed https -> http"


def test_https_to_http_redirect_refused_even_insecure(mlfs, tls_redirector, listener):
    tls_redirector.target = "http://" + listener.host
    r = mlfs("inspect", "--insecure", tls_redirector.ref, wrap=tls_redirector.wrap)
    assert_mlfs_error(r, "down to plain http")
    assert listener.connections == []


# -- token realms ---------------------------------------------------------------

def test_basic_credentials_not_sent_to_plain_http_realm_off_loopback(mlfs, bearer, tmp_path, listener):
    """The registry names an http:// realm on another host (auth.test, by
    name): the password must not cross the network in clear."""
    front = FaultProxy(("127.0.0.1", bearer.registry.port))
    try:
        challenge = 'Bearer realm="http://auth.test:%d/token",service="%s"' % (listener.port,
                                                                               bearer.issuer.service)
        front.fail(r"/v2/", 401, headers={"WWW-Authenticate": challenge}, times=100)
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps(auth_json(front.host)))
        r = mlfs("inspect", front.host + "/private/demo:latest",
                 env_extra={"REGISTRY_AUTH_FILE": str(auth)},
                 wrap=unshare_wrap(hosts_file(tmp_path, ("127.0.0.1", "auth.test"))))
        assert_mlfs_error(r, "refusing to send credentials", secrets=["wonderland"])
        assert listener.connections == [], "credentials went to the plain-HTTP realm"
    finally:
        front.close()


def test_anonymous_token_from_plain_http_realm_still_works(mlfs, bearer):
    """The test issuer's realm is http://127.0.0.1:PORT: loopback, so
    anonymous (and credentialed) token requests to it go on as before."""
    assert_ok(mlfs("inspect", bearer.ref("public/demo:latest")))


# -- behind a proxy -------------------------------------------------------------

@pytest.fixture
def connect_proxy():
    p = ConnectProxy()
    yield p
    p.close()


def test_redirect_through_proxy_goes_to_the_checked_address(mlfs, bearer, connect_proxy, tmp_path):
    """The proxy resolves names: a name that gives mlfs's check one address
    and the proxy another (DNS rebinding) would lead the proxy anywhere.
    The redirect target blobs.test (127.0.0.2 by the hosts file: loopback,
    like the registry) is resolved and checked by mlfs, and the proxy is
    asked to CONNECT to that address, plain http included, never to the
    name.  The blobs still arrive through the tunnel."""
    reg = bearer.registry
    store = FaultProxy(("127.0.0.1", reg.port), bind="127.0.0.2")
    front = FaultProxy(("127.0.0.1", reg.port))
    try:
        def from_storage(path):
            digest = path.split("/blobs/", 1)[1].split("?", 1)[0]
            try:
                with open(reg.blob_data_path(digest), "rb") as f:
                    return f.read()
            except OSError:
                return None
        store.serve_blobs_from(from_storage)
        front.redirect_blobs("http://blobs.test:%d" % store.port)
        r = mlfs("pull", "--keep-blobs", "--platform", "linux/arm64", front.host + "/public/demo:latest",
                 env_extra={"http_proxy": connect_proxy.url, "no_proxy": "127.0.0.1"},
                 wrap=unshare_wrap(hosts_file(tmp_path, ("127.0.0.2", "blobs.test"))))
        assert_ok(r)
        assert store.seen, "the redirect was not followed"
        assert connect_proxy.connects(), connect_proxy.targets
        assert set(connect_proxy.connects()) == {"127.0.0.2:%d" % store.port}, connect_proxy.targets
        assert not any("blobs.test" in t for t in connect_proxy.targets), connect_proxy.targets
    finally:
        store.close()
        front.close()


@pytest.mark.parametrize("addr,want", [("203.0.113.7", "203.0.113.7:443"),
                                       ("2001:db8::7", "[2001:db8::7]:443")])
def test_foreign_url_through_proxy_goes_to_the_checked_address(mlfs, foreign_reg, connect_proxy, tmp_path,
                                                               addr, want):
    """A layer URL by name (layer.test, a public address by the hosts file):
    the proxy is asked to CONNECT to that address (IPv6 in brackets), which
    this proxy refuses (it reaches loopback only), so the pull fails after."""
    ref = foreign_reg("proxied-" + addr.replace(":", "-"), ["https://layer.test/layer"])
    r = mlfs("pull", "--keep-blobs", ref, env_extra={"https_proxy": connect_proxy.url},
             wrap=unshare_wrap(hosts_file(tmp_path, (addr, "layer.test"))))
    assert_mlfs_error(r)
    assert connect_proxy.connects() and set(connect_proxy.connects()) == {want}, connect_proxy.targets


def test_redirect_through_proxy_to_link_local_name_refused(mlfs, front, connect_proxy, tmp_path):
    """Behind a proxy the name is still checked first: metadata.test ->
    169.254.169.254 is refused and the proxy hears nothing."""
    front.redirect_blobs("http://metadata.test")
    r = pull_public(mlfs, front, timeout=120,
                    env_extra={"http_proxy": connect_proxy.url, "no_proxy": "127.0.0.1"},
                    wrap=unshare_wrap(hosts_file(tmp_path, ("169.254.169.254", "metadata.test"))))
    line = assert_mlfs_error(r, "refusing")
    assert "link-local" in line, line
    assert connect_proxy.targets == []


# -- untrusted text -------------------------------------------------------------

def test_platform_strings_reach_the_terminal_escaped(mlfs, tmp_path_factory, request):
    """An index whose platform fields carry terminal controls (ESC, and CSI
    as UTF-8 U+009B): the "no such platform" message lists them escaped."""
    reg = Registry(str(tmp_path_factory.mktemp("netsafety-text"))).start()
    request.addfinalizer(reg.stop)
    client = RegistryClient(reg.url)
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cd = client.push_blob("evil", cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": MT_V2S2,
                    "config": {"mediaType": MT_CONFIG, "digest": cd, "size": len(cfg)},
                    "layers": []}).encode()
    md = client.put_manifest("evil", "m", m, MT_V2S2)
    if not isinstance(md, str) or not md.startswith("sha256:"):
        md = "sha256:" + hashlib.sha256(m).hexdigest()
    idx = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
        {"mediaType": MT_V2S2, "digest": md, "size": len(m),
         "platform": {"os": "linux", "architecture": "amd64",
                      "variant": "\u009b2J\u001b]0;owned\u0007x"}}]}
    client.put_manifest("evil", "latest", json.dumps(idx).encode(), MT_OCI_INDEX)
    r = mlfs("inspect", "--platform", "linux/s390x", reg.host + "/evil:latest")
    line = assert_mlfs_error(r)
    raw = r.stderr.encode("utf-8", "surrogateescape")
    assert b"\x1b" not in raw and b"\x07" not in raw and b"\xc2\x9b" not in raw, raw
    assert "\\xc2\\x9b2j\\x1b]0;owned\\x07x" in line.lower(), line  # (variants are lower-cased)


# -- certs.d CAs: added to the system's, never instead ---------------------------

def test_certs_d_ca_adds_to_the_system_trust(mlfs, tls_setup, tmp_path):
    """The registry's CA is trusted by the system (here: a hashed file in
    /etc/ssl/certs, libcurl's CA path, as on distributions that do not keep
    Debian's bundle), and certs.d holds an unrelated CA for the same host.
    mlfs used to hand libcurl a copy of Debian's bundle file plus the
    certs.d CAs (CURLOPT_CAINFO_BLOB), which replaces libcurl's default
    bundle: on a distribution whose bundle lives elsewhere, any certs.d CA
    dropped the whole system trust.  Now the certs.d CAs are added to
    OpenSSL's store on top of what libcurl loaded.  (On Debian the copied
    path is libcurl's own default, so this guard passes with the old code
    too; it pins that the system trust, CA path included, survives.)
    The unrelated CA has its own subject name: OpenSSL looks issuers up
    by name, and a same-named wrong CA would hide the right one."""
    import subprocess
    sysdir = tmp_path / "ssl-certs"
    sysdir.mkdir()
    with open("/etc/ssl/certs/ca-certificates.crt", "rb") as f:
        (sysdir / "ca-certificates.crt").write_bytes(f.read())
    h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", tls_setup.certs["ca"]],
                       capture_output=True, text=True, check=True).stdout.strip()
    with open(tls_setup.certs["ca"], "rb") as f:
        (sysdir / (h + ".0")).write_bytes(f.read())
    certs = tmp_path / "certs.d"
    host = tls_setup.tls_ref.split("/", 1)[0]
    (certs / host).mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=unrelated CA",
                    "-days", "2", "-keyout", str(tmp_path / "unrelated.key"),
                    "-out", str(certs / host / "ca.crt")], capture_output=True, check=True)
    wrap = list(unshare_wrap(tls_setup.hosts, str(certs)))
    # One more bind mount, over /etc/ssl/certs, in the same namespace.
    i = wrap.index("-c") + 1
    wrap[i] = 'mount --bind "%s" /etc/ssl/certs || exit 99; ' % sysdir + wrap[i]
    r = mlfs("inspect", "--json", tls_setup.tls_ref, wrap=wrap)
    assert_ok(r)
    # Without the certs.d CA the same setup works too (the system trust alone) ...
    wrap_empty = list(unshare_wrap(tls_setup.hosts, tls_setup.certs_empty))
    wrap_empty[i] = wrap[i].split(";", 1)[0] + "; " + wrap_empty[i]
    assert_ok(mlfs("inspect", "--json", tls_setup.tls_ref, wrap=wrap_empty))
