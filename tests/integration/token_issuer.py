"""A small bearer-token issuer for distribution's `auth: token` mode.

distribution 2.8 checks a token's signature against `rootcertbundle` in one
of three ways: an `x5c` certificate chain in the JWS header, a `jwk`, or a
libtrust-style `kid`.  The `x5c` way needs nothing but a self-signed
certificate, so that is what we use: the header carries the certificate
(standard base64 DER), the registry verifies it chains to the bundle, then
checks the RS256 signature with the certificate's key.

Policy (enough for the tests, nothing more):
- Basic credentials, when sent, must be one of `users`; otherwise 401.
- Authenticated users get what they ask for among pull/push.
- Anonymous clients get pull on repositories under `public/`, nothing else
  (an empty `access` list, as Docker Hub does: the registry then answers 401).

Every request is recorded in `requests` so tests can assert on scope,
service and who asked.
"""

import base64
import datetime
import http.server
import json
import threading
import time
import urllib.parse
import uuid

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def make_signing_cert(common_name="mlfs-test-token-signer"):
    """Returns (private_key_pem, cert_pem, cert_der) for a self-signed RSA cert."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM), cert.public_bytes(
        serialization.Encoding.DER
    )


def parse_scope(scope):
    """'repository:a/b:pull,push' -> ('repository', 'a/b', ['pull', 'push'])."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return kind, name, [a for a in actions.split(",") if a]


class TokenIssuer:
    TOKEN_LIFETIME = 300

    def __init__(self, service, issuer="mlfs-test-issuer", users=None, public_prefix="public/"):
        self.service = service
        self.issuer = issuer
        self.users = dict(users if users is not None else {"alice": "wonderland"})
        self.public_prefix = public_prefix
        self.key_pem, self.cert_pem, cert_der = make_signing_cert()
        self._x5c = [base64.b64encode(cert_der).decode("ascii")]
        self._lock = threading.Lock()
        self._requests = []
        self._server = None
        self._thread = None

    # -- lifecycle ---------------------------------------------------------
    def start(self):
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                issuer._handle(self)

            def do_POST(self):
                # OAuth2 POST flow is not offered; clients fall back to GET.
                issuer._record(self, status=404, user=None, scopes=[])
                issuer._reply(self, 404, {"errors": [{"code": "NOT_FOUND", "message": "use GET"}]})

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def realm(self):
        return "http://127.0.0.1:%d/token" % self.port

    def write_rootcert(self, path):
        with open(path, "wb") as f:
            f.write(self.cert_pem)
        return path

    # -- request log -------------------------------------------------------
    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def clear(self):
        with self._lock:
            self._requests.clear()

    def _record(self, handler, status, user, scopes, basic=False, granted=None):
        url = urllib.parse.urlsplit(handler.path)
        entry = {
            "method": handler.command,
            "path": url.path,
            "query": urllib.parse.parse_qs(url.query),
            "service": urllib.parse.parse_qs(url.query).get("service", [None])[0],
            "scopes": scopes,
            "basic": basic,
            "user": user,
            "status": status,
            "granted": granted or [],
            "time": time.time(),
        }
        with self._lock:
            self._requests.append(entry)

    # -- the token endpoint ------------------------------------------------
    @staticmethod
    def _reply(handler, status, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler):
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = []
        for s in query.get("scope", []):
            scopes.extend(s.split())  # several scopes may share one parameter

        user = None
        basic = False
        authz = handler.headers.get("Authorization", "")
        if authz.lower().startswith("basic "):
            basic = True
            try:
                raw = base64.b64decode(authz[6:].strip(), validate=True).decode()
                u, _, p = raw.partition(":")
            except Exception:
                u, p = None, None
            if u is None or self.users.get(u) != p:
                self._record(handler, 401, None, scopes, basic=True)
                self._reply(
                    handler,
                    401,
                    {"errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}]},
                    [("WWW-Authenticate", 'Basic realm="mlfs-test-issuer"')],
                )
                return
            user = u

        if url.path != "/token":
            self._record(handler, 404, user, scopes, basic=basic)
            self._reply(handler, 404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            return

        if query.get("service", [None])[0] != self.service:
            self._record(handler, 400, user, scopes, basic=basic)
            self._reply(handler, 400, {"errors": [{"code": "INVALID_REQUEST", "message": "unknown service"}]})
            return

        access = []
        for s in scopes:
            kind, name, actions = parse_scope(s)
            if kind != "repository" or not name:
                continue
            if user is not None:
                allowed = [a for a in actions if a in ("pull", "push")]
            elif name.startswith(self.public_prefix):
                allowed = [a for a in actions if a == "pull"]
            else:
                allowed = []
            if allowed:
                access.append({"type": "repository", "name": name, "actions": allowed})

        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.TOKEN_LIFETIME,
            "nbf": now - 5,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, self.key_pem, algorithm="RS256", headers={"x5c": self._x5c})
        self._record(handler, 200, user, scopes, basic=basic, granted=access)
        self._reply(
            handler,
            200,
            {
                "token": token,
                "access_token": token,
                "expires_in": self.TOKEN_LIFETIME,
                "issued_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            },
        )
