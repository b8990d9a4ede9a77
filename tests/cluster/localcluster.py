"""The local control plane: build, start and stop a real etcd, kube-apiserver and kube-controller-manager.

Used by the Makefile (``make cluster-up``, ``make cluster-down``, ``make demo``) and by the pytest session
fixture in ``tests/conftest.py``. The binaries are built from the pinned Go module in this folder with the
machine's Go toolchain and cached outside the repository, keyed by the versions and the go.sum, so only
the first run pays for the build.

Everything listens on loopback only. The API server runs with the RBAC authorizer and the ServiceAccount
and PodSecurity admission plugins, like a real cluster; there is no kubelet or scheduler, so pods are
admitted and stored but never run (runners are started as local processes instead).

Usage::

    python tests/cluster/localcluster.py build           # build or reuse the binaries
    python tests/cluster/localcluster.py up [--dir D]    # start; prints the kubeconfig path
    python tests/cluster/localcluster.py down [--dir D]  # stop and remove the state
    python tests/cluster/localcluster.py status [--dir D]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
K8S_VERSION = "v1.33.13"
ETCD_VERSION = "v3.5.21"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
#: Bumped whenever the way the binaries are built changes, so a cached build of the old recipe is not reused.
BUILD_RECIPE = "2"
DEFAULT_DIR = REPO / ".cluster"


def say(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- build


def cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "tradewarden" / "controlplane"


def go_version() -> str:
    out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
    return out.strip()


def bin_dir() -> pathlib.Path:
    """The cache folder for this exact build: versions, toolchain and the module's go.sum."""
    digest = hashlib.sha256((HERE / "go.mod").read_bytes() + (HERE / "go.sum").read_bytes()).hexdigest()[:12]
    return cache_root() / f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_{go_version()}_{digest}_r{BUILD_RECIPE}"


def build() -> pathlib.Path:
    """Build the three binaries unless the cache already has them; return their folder."""
    target = bin_dir()
    if all((target / b).is_file() for b in BINARIES):
        say(f"reusing control plane binaries in {target}")
        return target
    say(f"building kube-apiserver and kube-controller-manager {K8S_VERSION} and etcd {ETCD_VERSION} "
        "from Go modules (first run only; about 15-25 minutes on 2 cores)")
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    env = dict(os.environ, CGO_ENABLED="0")
    # The version a release build would stamp in: without it the API server reports v0.0.0-master and
    # `kubectl version` cannot parse it.
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    stamp = " ".join(f"-X k8s.io/component-base/version.{k}={v}" for k, v in (
        ("gitVersion", K8S_VERSION), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean")))
    for pkg in ("./cmd/etcd", "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager"):
        say(f"  go build {pkg}")
        subprocess.run(["go", "build", "-trimpath", f"-ldflags=-s -w {stamp}", "-o", str(tmp) + "/", pkg],
                       cwd=HERE, env=env, check=True)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    say(f"built in {time.monotonic() - started:.0f} s into {target}")
    return target


# --------------------------------------------------------------------------------------------- certificates


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, org: str | None,
           server: bool) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage(
            [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_pki(pki: pathlib.Path) -> None:
    """A throwaway CA, the API server's serving cert, an admin client cert and the SA signing key."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("tradewarden-local-ca"))
        .issuer_name(_name("tradewarden-local-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (pki / "ca.key").write_bytes(_pem_key(ca_key))
    for name, cn, org, server in (
        ("apiserver", "kube-apiserver", None, True),
        # The admin identity (system:masters) is used by kubectl, the tests and kube-controller-manager:
        # a throwaway local cluster has no need to split the controller manager's identity.
        ("admin", "tradewarden-admin", "system:masters", False),
    ):
        crt, key = _issue(ca_key, ca_cert, cn, org, server)
        (pki / f"{name}.crt").write_bytes(crt)
        (pki / f"{name}.key").write_bytes(key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(_pem_key(sa_key))
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for f in pki.iterdir():
        f.chmod(0o600)


def write_kubeconfig(path: pathlib.Path, pki: pathlib.Path, port: int) -> None:
    import base64

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tradewarden-local", "cluster": {
            "server": f"https://127.0.0.1:{port}", "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}}],
        "contexts": [{"name": "tradewarden-local", "context": {"cluster": "tradewarden-local", "user": "admin"}}],
        "current-context": "tradewarden-local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


# --------------------------------------------------------------------------------------------- run


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  # Every write, at Metadata level: the operator's "quiet when nothing changes" is measured by counting them.
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
"""


@dataclass
class State:
    dir: str
    kubeconfig: str
    apiserver_port: int
    etcd_port: int
    pids: dict[str, int]
    started_at: float
    startup_seconds: float

    @classmethod
    def load(cls, state_dir: pathlib.Path) -> State | None:
        path = state_dir / "state.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self) -> None:
        (pathlib.Path(self.dir) / "state.json").write_text(json.dumps(asdict(self), indent=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(name: str, argv: list[str], logs: pathlib.Path) -> subprocess.Popen[bytes]:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it for its lifetime
    # A new session, so Ctrl-C in a terminal running `make demo` reaches us, not the control plane directly.
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _ready(port: int, pki: pathlib.Path, path: str = "/readyz") -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, ssl.SSLError):
        return False


def healthy(state: State) -> bool:
    alive = all(_pid_alive(pid) for pid in state.pids.values())
    return alive and _ready(state.apiserver_port, pathlib.Path(state.dir) / "pki")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie child still answers kill(0); read its state to be sure.
    with contextlib.suppress(OSError):
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    return True


def up(state_dir: pathlib.Path, timeout: float = 120.0) -> State:
    """Start a control plane in ``state_dir`` (reusing a healthy one already there)."""
    existing = State.load(state_dir)
    if existing and healthy(existing):
        say(f"control plane already running at https://127.0.0.1:{existing.apiserver_port}")
        return existing
    if existing:
        down(state_dir)
    bins = build()
    started = time.monotonic()
    say(f"starting etcd, kube-apiserver and kube-controller-manager in {state_dir}")
    state_dir.mkdir(parents=True, exist_ok=True)
    pki, logs, data = state_dir / "pki", state_dir / "logs", state_dir / "etcd"
    logs.mkdir(exist_ok=True)
    make_pki(pki)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    kubeconfig = state_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, pki, api_port)
    (state_dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
    pids: dict[str, int] = {}

    etcd = _spawn("etcd", [
        str(bins / "etcd"), "--data-dir", str(data), "--name", "tradewarden-local",
        "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
        "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"tradewarden-local=http://127.0.0.1:{peer_port}",
        # A test cluster trades durability for speed: nothing here must survive a power cut.
        "--unsafe-no-fsync", "--quota-backend-bytes", str(2 * 1024**3), "--log-level", "warn",
    ], logs)
    pids["etcd"] = etcd.pid
    api = _spawn("kube-apiserver", [
        str(bins / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
        f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key",
        f"--client-ca-file={pki}/ca.crt",
        "--authorization-mode=RBAC",
        "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,LimitRanger,ResourceQuota,"
        "DefaultStorageClass,ValidatingAdmissionPolicy",
        f"--service-account-key-file={pki}/sa.pub", f"--service-account-signing-key-file={pki}/sa.key",
        f"--service-account-issuer=https://127.0.0.1:{api_port}",
        "--api-audiences=https://kubernetes.default.svc",
        # A CIDR the API server allocates Service IPs from; nothing is ever sent to it.
        "--service-cluster-ip-range=10.96.0.0/24",
        "--allow-privileged=false",
        f"--audit-policy-file={state_dir}/audit-policy.yaml", f"--audit-log-path={logs}/audit.log",
        "--audit-log-maxsize=200", "--audit-log-maxbackup=1",
        "--v=1",
    ], logs)
    pids["kube-apiserver"] = api.pid
    state = State(dir=str(state_dir), kubeconfig=str(kubeconfig), apiserver_port=api_port, etcd_port=etcd_port,
                  pids=pids, started_at=time.time(), startup_seconds=0.0)
    state.save()
    deadline = time.monotonic() + timeout
    while not _ready(api_port, pki):
        if api.poll() is not None or etcd.poll() is not None:
            down(state_dir, keep=True)
            raise SystemExit(f"the control plane exited early; see {logs}/kube-apiserver.log and etcd.log")
        if time.monotonic() > deadline:
            down(state_dir, keep=True)
            raise SystemExit(f"kube-apiserver not ready after {timeout:.0f} s; see {logs}/kube-apiserver.log")
        time.sleep(0.2)
    kcm = _spawn("kube-controller-manager", [
        str(bins / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--secure-port=0",
        f"--service-account-private-key-file={pki}/sa.key", f"--root-ca-file={pki}/ca.crt",
        "--use-service-account-credentials=false",
        # Namespace cleanup, garbage collection of owned objects, default ServiceAccounts, StatefulSets.
        "--controllers=*,-nodeipam,-nodelifecycle,-route,-service,-cloud-node-lifecycle",
        "--concurrent-gc-syncs=5", "--v=1",
    ], logs)
    pids["kube-controller-manager"] = kcm.pid
    state.startup_seconds = round(time.monotonic() - started, 2)
    state.save()
    say(f"control plane ready in {state.startup_seconds:.1f} s at https://127.0.0.1:{api_port}")
    say(f"export KUBECONFIG={kubeconfig}")
    return state


def down(state_dir: pathlib.Path, keep: bool = False) -> None:
    """Stop every process of the control plane in ``state_dir`` and (unless ``keep``) remove its state."""
    state = State.load(state_dir)
    if state:
        for name in reversed(list(state.pids)):
            pid = state.pids[name]
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in state.pids.values():
            while _pid_alive(pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.1)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        say("control plane stopped")
    if not keep and state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    parser.add_argument("--dir", default=os.environ.get("TRADEWARDEN_CLUSTER_DIR", str(DEFAULT_DIR)),
                        help="State folder of the control plane (default: .cluster in the repository).")
    args = parser.parse_args(argv)
    state_dir = pathlib.Path(args.dir).resolve()
    if args.command == "build":
        print(build())
    elif args.command == "up":
        state = up(state_dir)
        print(state.kubeconfig)
    elif args.command == "down":
        down(state_dir)
    else:
        state = State.load(state_dir)
        if state and healthy(state):
            print(f"running: https://127.0.0.1:{state.apiserver_port} kubeconfig={state.kubeconfig}")
        else:
            print("not running")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
