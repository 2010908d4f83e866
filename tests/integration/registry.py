"""Start and stop a real `docker-registry` (distribution 2.8) for tests.

One process per Registry, bound to 127.0.0.1 on a free port, filesystem
storage under its own directory, everything it logs (access log included)
captured to `log_path` so tests can count requests.

Also: a minimal registry API client over urllib (for fixtures that need to
push things skopeo will not: manifests by digest only, broken config blobs)
and TLS certificate helpers.
"""

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

REGISTRY_BIN = os.environ.get("MLFS_TEST_REGISTRY_BIN", "/usr/bin/docker-registry")

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ALL_MANIFEST_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)

HTTP_TIMEOUT = 10


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- certificates -----------------------------------------------------------

def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_tls_certs(directory, dns_names, ip_addresses=()):
    """A CA and a server certificate it signs, for `dns_names`.

    Writes ca.crt, server.crt, server.key into `directory`; returns their paths.
    """
    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlfs test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans = [x509.DNSName(n) for n in dns_names] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": os.path.join(directory, "ca.crt"),
        "cert": os.path.join(directory, "server.crt"),
        "key": os.path.join(directory, "server.key"),
    }
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(_key_pem(key))
    return paths


# -- the registry process ----------------------------------------------------

_ACCESS_RE = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3}) ')


class Registry:
    """docker-registry on 127.0.0.1:<free port>.

    auth: None, "htpasswd" (users dict, bcrypt via htpasswd -B) or "token"
    (token_issuer: a started TokenIssuer).  tls: None or dict with cert/key.
    """

    READY_TIMEOUT = 15.0
    START_ATTEMPTS = 3

    def __init__(self, workdir, auth=None, users=None, token_issuer=None, tls=None, extra_config=()):
        self.workdir = workdir
        self.auth = auth
        self.users = dict(users or {"alice": "wonderland"})
        self.token_issuer = token_issuer
        self.tls = tls
        self.extra_config = list(extra_config)  # top-level YAML lines, e.g. a validation: block
        self.storage = os.path.join(workdir, "storage")
        self.config_path = os.path.join(workdir, "config.yml")
        self.log_path = os.path.join(workdir, "registry.log")
        self.port = None
        self.proc = None
        self._log = None

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def url(self):
        return "%s://%s" % (self.scheme, self.host)

    def _write_config(self):
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  formatter: text",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            "    rootdirectory: %s" % self.storage,
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            "  addr: 127.0.0.1:%d" % self.port,
            "  secret: mlfs-test-secret",
        ]
        if self.tls:
            lines += [
                "  tls:",
                "    certificate: %s" % self.tls["cert"],
                "    key: %s" % self.tls["key"],
            ]
        if self.auth == "htpasswd":
            htpasswd = os.path.join(self.workdir, "htpasswd")
            with open(htpasswd, "w") as f:
                for user, password in self.users.items():
                    out = subprocess.run(
                        ["htpasswd", "-Bbn", user, password],
                        check=True, capture_output=True, text=True, timeout=30,
                    ).stdout.strip()
                    f.write(out + "\n")
            lines += [
                "auth:",
                "  htpasswd:",
                "    realm: mlfs-test-basic",
                "    path: %s" % htpasswd,
            ]
        elif self.auth == "token":
            bundle = self.token_issuer.write_rootcert(os.path.join(self.workdir, "token-root.crt"))
            lines += [
                "auth:",
                "  token:",
                "    realm: %s" % self.token_issuer.realm,
                "    service: %s" % self.token_issuer.service,
                "    issuer: %s" % self.token_issuer.issuer,
                "    rootcertbundle: %s" % bundle,
            ]
        elif self.auth is not None:
            raise ValueError("unknown auth kind %r" % (self.auth,))
        lines += self.extra_config
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _ready(self):
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            urllib.request.urlopen(self.url + "/v2/", timeout=1, context=ctx).close()
            return True
        except urllib.error.HTTPError as e:
            return e.code == 401  # auth configured: it answers, so it is up
        except (urllib.error.URLError, OSError):
            return False

    def _serve(self):
        """Serve on self.port and wait (bounded) until ready; the exit status
        (None while alive) on failure, after stopping it; True when ready."""
        self._write_config()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", self.config_path],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._ready():
                return True
            time.sleep(0.05)
        rc = self.proc.poll()
        self.stop()
        return rc

    def start(self):
        os.makedirs(self.storage, exist_ok=True)
        last_error = None
        for _ in range(self.START_ATTEMPTS):
            self.port = free_port()
            rc = self._serve()
            if rc is True:
                return self
            # port race or a slow start: try another port
            last_error = "registry did not become ready (exit status %r); log: %s" % (rc, self.log_path)
        raise RuntimeError(last_error)

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- storage and log ------------------------------------------------------
    def blob_data_path(self, digest):
        algo, hexd = digest.split(":", 1)
        return os.path.join(
            self.storage, "docker", "registry", "v2", "blobs", algo, hexd[:2], hexd, "data"
        )

    def corrupt_blob(self, digest, offset=None):
        """Flip one byte of a stored blob, keeping its size (the registry serves it as is)."""
        path = self.blob_data_path(digest)
        size = os.path.getsize(path)
        offset = size // 2 if offset is None else offset
        with open(path, "r+b") as f:
            f.seek(offset)
            b = f.read(1)
            f.seek(offset)
            f.write(bytes([b[0] ^ 0x01]))

    def requests(self):
        """Access-log entries so far: list of (method, path, status)."""
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return [(m.group(1), m.group(2), int(m.group(3))) for m in _ACCESS_RE.finditer(text)]

    def blob_gets(self, digest=None, status=None):
        """GETs of /v2/<repo>/blobs/<digest> in the access log."""
        n = 0
        for method, path, st in self.requests():
            if method != "GET" or "/blobs/sha256:" not in path:
                continue
            if digest is not None and not path.split("?", 1)[0].endswith("/blobs/" + digest):
                continue
            if status is not None and st != status:
                continue
            n += 1
        return n


# -- a minimal API client ------------------------------------------------------

class RegistryClient:
    """Plain-HTTP (or unverified HTTPS) registry client, optional Basic auth."""

    def __init__(self, base_url, username=None, password=None):
        self.base = base_url.rstrip("/")
        self.auth = None
        if username is not None:
            self.auth = "Basic " + base64.b64encode(("%s:%s" % (username, password)).encode()).decode()
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def _request(self, method, url, data=None, headers=None):
        if not url.startswith("http"):
            url = self.base + url
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        if self.auth:
            req.add_header("Authorization", self.auth)
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT, context=self.ctx) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()

    def get_manifest(self, repo, ref, accept=ALL_MANIFEST_TYPES):
        """Returns (body bytes, media type, digest of the body)."""
        _, headers, body = self._request(
            "GET", "/v2/%s/manifests/%s" % (repo, ref), headers={"Accept": ", ".join(accept)}
        )
        ctype = headers.get("Content-Type", "").split(";")[0].strip()
        return body, ctype, sha256_digest(body)

    def get_blob(self, repo, digest):
        return self._request("GET", "/v2/%s/blobs/%s" % (repo, digest))[2]

    def push_blob(self, repo, data):
        digest = sha256_digest(data)
        _, headers, _ = self._request("POST", "/v2/%s/blobs/uploads/" % repo, data=b"")
        location = urllib.parse.urljoin(self.base + "/", headers["Location"])
        sep = "&" if "?" in location else "?"
        self._request(
            "PUT",
            location + sep + "digest=" + urllib.parse.quote(digest),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def put_manifest(self, repo, ref, body, media_type):
        """PUT a manifest by tag or digest; returns the digest the registry reports."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body, indent=2).encode()
        _, headers, _ = self._request(
            "PUT", "/v2/%s/manifests/%s" % (repo, ref), data=body, headers={"Content-Type": media_type}
        )
        digest = headers.get("Docker-Content-Digest")
        assert digest == sha256_digest(body), (digest, sha256_digest(body))
        return digest


def skopeo(*args, timeout=300):
    """Run skopeo (policy checks off: these are our own images)."""
    cmd = ["skopeo", "--insecure-policy"] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
    return r.stdout


def copy_image(src_registry, src_ref, dst_registry, dst_ref, all_platforms=True, dest_creds=None):
    """skopeo copy between two test registries (TLS verification off: self-signed)."""
    args = ["copy", "--src-tls-verify=false", "--dest-tls-verify=false"]
    if all_platforms:
        args.append("--all")
    if dest_creds:
        args += ["--dest-creds", dest_creds]
    args += ["docker://%s/%s" % (src_registry.host, src_ref), "docker://%s/%s" % (dst_registry.host, dst_ref)]
    return skopeo(*args)


def find_tool(name):
    path = shutil.which(name)
    if path is None:
        raise RuntimeError("%s not found on PATH (see contrib/install-deps.sh)" % name)
    return path
