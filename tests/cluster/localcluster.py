"""The local cluster: build, start and stop a real control plane (etcd, kube-apiserver,
kube-controller-manager) and one real node (containerd, kubelet, kube-proxy, kube-scheduler; node.py).

Used by the Makefile (``make cluster-up``, ``make cluster-down``, ``make demo``) and by the pytest session
fixture in ``tests/conftest.py``. The binaries are built from the pinned Go module in this folder with the
machine's Go toolchain and cached outside the repository, keyed by the versions and the go.sum, so only
the first run pays for the build.

Everything listens on loopback or on the pod bridge of this machine (node.py), and no traffic leaves it.
The API server runs with the Node and RBAC authorizers and the NodeRestriction, ServiceAccount and
PodSecurity admission plugins, like a real cluster. The images the pods run are built from images/ by
images.py and imported into the node's containerd at every start; a dynamic provisioner
(provisioner.py) backs the default StorageClass.

Usage::

    python tests/cluster/localcluster.py build           # build or reuse the binaries
    python tests/cluster/localcluster.py up [--dir D]    # start; prints the kubeconfig path
    python tests/cluster/localcluster.py down [--dir D]  # stop and remove the state
    python tests/cluster/localcluster.py status [--dir D]
    python tests/cluster/localcluster.py run [--dir D] -- CMD...  # CMD against a cluster (started if none)

``run`` is how ``make test`` gives one cluster to all of pytest's workers: it reuses a healthy cluster in
the state folder (one left running by ``make cluster-up`` stays running) or starts one there and stops it
when CMD ends, however CMD ends. CMD sees the folder as ``TRADEWARDEN_CLUSTER_DIR``, and
``TRADEWARDEN_CLUSTER_STARTED=1`` when the cluster is its own to stop.
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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import images  # the sibling modules of this script
import node

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
K8S_VERSION = "v1.33.13"
ETCD_VERSION = "v3.5.21"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
#: The node: built from the same pinned module, into the same cache folder.
NODE_BINARIES = ("kube-scheduler", "kubelet", "kube-proxy")
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


def build(names: tuple[str, ...] = BINARIES + NODE_BINARIES) -> pathlib.Path:
    """Build each of ``names`` the cache does not have yet; return their folder.

    Each binary is built into a temporary name and renamed, so an interrupted build never leaves a
    half-written binary that a later run would take for a good one.
    """
    target = bin_dir()
    missing = [n for n in names if not (target / n).is_file()]
    if not missing:
        say(f"reusing cluster binaries in {target}")
        return target
    say(f"building {', '.join(missing)} ({K8S_VERSION}, etcd {ETCD_VERSION}) from Go modules "
        "(first run only; about 15-25 minutes on 2 cores with an empty Go cache)")
    target.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0")
    # The version a release build would stamp in: without it the API server reports v0.0.0-master and
    # `kubectl version` cannot parse it.
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    stamp = " ".join(f"-X k8s.io/component-base/version.{k}={v}" for k, v in (
        ("gitVersion", K8S_VERSION), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean")))
    for name in missing:
        pkg = "./cmd/etcd" if name == "etcd" else f"k8s.io/kubernetes/cmd/{name}"
        started = time.monotonic()
        partial = target / f".{name}.partial"
        subprocess.run(["go", "build", "-trimpath", f"-ldflags=-s -w {stamp}", "-o", str(partial), pkg],
                       cwd=HERE, env=env, check=True)
        partial.rename(target / name)
        say(f"  built {name} in {time.monotonic() - started:.0f} s")
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
           server: bool, ips: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
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
            x509.DNSName("kubernetes.default.svc"), x509.DNSName("kubernetes.default.svc.cluster.local"),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", *ips)),
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
    for name, cn, org, server, ips in (
        # Pods reach the API server at the bridge address or the `kubernetes` Service IP.
        ("apiserver", "kube-apiserver", None, True, (node.BRIDGE_IP, node.SERVICE_IP)),
        # The admin identity (system:masters) is used by kubectl, the tests and kube-controller-manager:
        # a throwaway local cluster has no need to split the controller manager's identity.
        ("admin", "tradewarden-admin", "system:masters", False, ()),
        # The node's parts each have the identity a real cluster gives them (Node authorizer, default RBAC).
        ("kubelet", f"system:node:{node.NODE_NAME}", "system:nodes", False, ()),
        ("kubelet-serving", node.NODE_NAME, None, True, (node.BRIDGE_IP,)),
        ("kube-proxy", "system:kube-proxy", None, False, ()),
        ("kube-scheduler", "system:kube-scheduler", None, False, ()),
        ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters", False, ()),
    ):
        crt, key = _issue(ca_key, ca_cert, cn, org, server, ips)
        (pki / f"{name}.crt").write_bytes(crt)
        (pki / f"{name}.key").write_bytes(key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(_pem_key(sa_key))
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for f in pki.iterdir():
        f.chmod(0o600)


def write_kubeconfig(path: pathlib.Path, pki: pathlib.Path, port: int, user: str = "admin") -> None:
    import base64

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tradewarden-local", "cluster": {
            "server": f"https://{node.BRIDGE_IP}:{port}", "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(f"{user}.crt"), "client-key-data": b64(f"{user}.key")}}],
        "contexts": [{"name": "tradewarden-local", "context": {"cluster": "tradewarden-local", "user": user}}],
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
    address: str = "127.0.0.1"
    node_ready_seconds: float = 0.0

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


def _spawn(name: str, argv: list[str], logs: pathlib.Path,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it for its lifetime
    # A new session, so Ctrl-C in a terminal running `make demo` reaches us, not the control plane directly.
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def _get(port: int, pki: pathlib.Path, path: str) -> bytes | None:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"https://{node.BRIDGE_IP}:{port}{path}", context=ctx, timeout=2) as resp:
            return bytes(resp.read()) if resp.status == 200 else None
    except (OSError, ssl.SSLError):
        return None


def _ready(port: int, pki: pathlib.Path, path: str = "/readyz") -> bool:
    return _get(port, pki, path) is not None


def _node_ready(port: int, pki: pathlib.Path) -> bool:
    """The node reports Ready and the node lifecycle controller has lifted the not-ready taint."""
    body = _get(port, pki, f"/api/v1/nodes/{node.NODE_NAME}")
    if body is None:
        return False
    obj = json.loads(body)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))
    taints = [t["key"] for t in obj.get("spec", {}).get("taints") or []]
    return ready and not any(t.startswith("node.kubernetes.io/") for t in taints)


def healthy(state: State) -> bool:
    alive = all(_pid_alive(pid) for pid in state.pids.values())
    return (alive and state.address == node.BRIDGE_IP and "kubelet" in state.pids
            and _ready(state.apiserver_port, pathlib.Path(state.dir) / "pki"))


def _alive_dir(state_dir: pathlib.Path) -> bool:
    state = State.load(state_dir)
    return bool(state and all(_pid_alive(pid) for pid in state.pids.values()))


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


STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": node.STORAGE_CLASS,
                 "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "tradewarden.io/local-dir", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
}


def up(state_dir: pathlib.Path, timeout: float = 120.0) -> State:
    """Start a one-node cluster in ``state_dir`` (reusing a healthy one already there)."""
    existing = State.load(state_dir)
    if existing and healthy(existing):
        say(f"cluster already running at https://{existing.address}:{existing.apiserver_port}")
        return existing
    node.ensure_packages()
    bins = build()
    # Refuse while another cluster's node is alive (its shims answer to the same containerd socket), then
    # clean what a crashed run here left, then take the machine's node.
    node.claim(state_dir, _alive_dir)
    down(state_dir)
    node.claim(state_dir, _alive_dir)
    built = _timed_step("images", images.build_all)
    started = time.monotonic()
    say(f"starting etcd, kube-apiserver, kube-controller-manager and the node {node.NODE_NAME} in {state_dir}")
    state_dir.mkdir(parents=True, exist_ok=True)
    pki, logs, data = state_dir / "pki", state_dir / "logs", state_dir / "etcd"
    logs.mkdir(exist_ok=True)
    node.bridge_up()
    make_pki(pki)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    kubeconfig = state_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, pki, api_port)
    kubeconfigs = {}
    for user in ("kubelet", "kube-proxy", "kube-scheduler"):
        kubeconfigs[user] = state_dir / f"{user}.kubeconfig"
        write_kubeconfig(kubeconfigs[user], pki, api_port, user)
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
        # The pod bridge's own address: the host and the pods (through the `kubernetes` Service) reach it.
        f"--bind-address={node.BRIDGE_IP}", f"--advertise-address={node.BRIDGE_IP}", f"--secure-port={api_port}",
        f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key",
        f"--client-ca-file={pki}/ca.crt",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NamespaceLifecycle,NodeRestriction,ServiceAccount,PodSecurity,LimitRanger,"
        "ResourceQuota,DefaultStorageClass,ValidatingAdmissionPolicy",
        f"--service-account-key-file={pki}/sa.pub", f"--service-account-signing-key-file={pki}/sa.key",
        f"--service-account-issuer=https://{node.BRIDGE_IP}:{api_port}",
        "--api-audiences=https://kubernetes.default.svc",
        f"--service-cluster-ip-range={node.SERVICE_RANGE}",
        f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
        f"--kubelet-certificate-authority={pki}/ca.crt", "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=false",
        f"--audit-policy-file={state_dir}/audit-policy.yaml", f"--audit-log-path={logs}/audit.log",
        "--audit-log-maxsize=200", "--audit-log-maxbackup=1",
        "--v=1",
    ], logs)
    pids["kube-apiserver"] = api.pid
    state = State(dir=str(state_dir), kubeconfig=str(kubeconfig), apiserver_port=api_port, etcd_port=etcd_port,
                  pids=pids, started_at=time.time(), startup_seconds=0.0, address=node.BRIDGE_IP)
    state.save()
    deadline = time.monotonic() + timeout
    while not _ready(api_port, pki):
        if api.poll() is not None or etcd.poll() is not None:
            down(state_dir, keep=True)
            part = "kube-apiserver" if api.poll() is not None else "etcd"
            raise node.fail(part, logs / f"{part}.log", "exited early")
        if time.monotonic() > deadline:
            down(state_dir, keep=True)
            raise node.fail("kube-apiserver", logs / "kube-apiserver.log", f"not ready after {timeout:.0f} s")
        time.sleep(0.2)
    kcm = _spawn("kube-controller-manager", [
        str(bins / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--secure-port=0",
        f"--service-account-private-key-file={pki}/sa.key", f"--root-ca-file={pki}/ca.crt",
        "--use-service-account-credentials=false",
        # Everything but the cloud and IPAM controllers; the node lifecycle controller lifts the not-ready
        # taint admission puts on every new Node, so pods can be scheduled.
        "--controllers=*,-nodeipam,-route,-service,-cloud-node-lifecycle",
        "--concurrent-gc-syncs=5", "--v=1",
    ], logs)
    pids["kube-controller-manager"] = kcm.pid
    state.startup_seconds = round(time.monotonic() - started, 2)
    state.save()
    say(f"control plane ready in {state.startup_seconds:.1f} s at https://{node.BRIDGE_IP}:{api_port}")
    try:
        pids.update(node.start(state_dir, bins, lambda n, argv, env: _spawn(n, argv, logs, env), kubeconfigs,
                               images.PAUSE_IMAGE, lambda sock: images.load(built, sock)))
        prov = _spawn("provisioner", [sys.executable, str(HERE / "provisioner.py"), "--kubeconfig", str(kubeconfig),
                                      "--dir", str(state_dir / "node" / "volumes")], logs)
        pids["provisioner"] = prov.pid
        state.save()
        subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "apply", "-f", "-"], input=json.dumps(STORAGE_CLASS),
                       text=True, check=True, capture_output=True)
        deadline = time.monotonic() + timeout
        while not _node_ready(api_port, pki):
            for name in ("kubelet", "containerd", "kube-proxy", "kube-scheduler", "kube-controller-manager"):
                if not _pid_alive(pids[name]):
                    raise node.fail(name, logs / f"{name}.log", "exited")
            if time.monotonic() > deadline:
                raise node.fail("kubelet", logs / "kubelet.log", f"node not Ready after {timeout:.0f} s")
            time.sleep(0.25)
    except BaseException:
        down(state_dir, keep=True)
        raise
    state.node_ready_seconds = round(time.monotonic() - started, 2)
    state.save()
    say(f"node {node.NODE_NAME} Ready {state.node_ready_seconds:.1f} s after the control plane started")
    say(f"export KUBECONFIG={kubeconfig}")
    return state


def ensure_images(state: State) -> str:
    """Build the images of the current source (cached) and import any the running node lacks; return the
    tag the operator and runner images carry on the node. A cluster left running by `make cluster-up`
    thus always runs the code under test, not the code it was started with."""
    built = images.build_all()
    sock = node.CONTAINERD_SOCKET
    listed = subprocess.run(["ctr", "--address", str(sock), "-n", "k8s.io", "images", "ls", "-q"],
                            capture_output=True, text=True, check=True).stdout.split()
    have = {ref.removeprefix("docker.io/") for ref in listed}
    missing = {ref: archive for ref, archive in built.items() if ref not in have}
    if missing:
        images.load(missing, sock)
    # Builds of older trees go (the kubelet's image GC is off on this node: it must not drop ours).
    stale = [ref for ref in listed if ref.removeprefix("docker.io/") not in built
             and ref.removeprefix("docker.io/").startswith((images.OPERATOR_IMAGE + ":", images.RUNNER_IMAGE + ":"))]
    if stale:
        subprocess.run(["ctr", "--address", str(sock), "-n", "k8s.io", "images", "rm", *stale],
                       capture_output=True, check=False)
    # The tag of what was just built (the tree may change while a build runs).
    return next(ref for ref in built if ref.startswith(images.RUNNER_IMAGE + ":")).split(":", 1)[1]


def _timed_step(label: str, fn: object) -> dict[str, pathlib.Path]:
    started = time.monotonic()
    out = fn()  # type: ignore[operator]
    say(f"{label}: {time.monotonic() - started:.1f} s")
    return out  # type: ignore[no-any-return]


def down(state_dir: pathlib.Path, keep: bool = False) -> None:
    """Stop every process of the cluster in ``state_dir`` (running or crashed) and, unless ``keep``,
    remove its state: mounts, network namespaces, the bridge and the firewall rules go too."""
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
    if state_dir.exists():
        node.cleanup(state_dir, bin_dir())
        if state:
            say("cluster stopped")
    if not keep and state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)


def run(state_dir: pathlib.Path, command: list[str]) -> int:
    """Run ``command`` against the cluster in ``state_dir``: a healthy one is reused and left running;
    otherwise one is started there for the command and stopped after it (also on Ctrl-C or a failure)."""
    state = State.load(state_dir)
    started = not (state and healthy(state))
    if started:
        state = up(state_dir)
    assert state is not None
    try:
        ensure_images(state)  # once, before any worker asks for the tag
        # STARTED: the command may stop this cluster itself (the recovery test does); a reused one it must not.
        env = dict(os.environ, TRADEWARDEN_CLUSTER_DIR=str(state_dir), TRADEWARDEN_CLUSTER_STARTED=str(int(started)))
        return subprocess.call(command, env=env)
    finally:
        if started:
            down(state_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "up", "down", "status", "run"])
    parser.add_argument("--dir", default=os.environ.get("TRADEWARDEN_CLUSTER_DIR", str(DEFAULT_DIR)),
                        help="State folder of the control plane (default: .cluster in the repository).")
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="run: the command (after --) and its arguments.")
    args = parser.parse_args(argv)
    state_dir = pathlib.Path(args.dir).resolve()
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if (args.command == "run") != bool(command):
        parser.error("a command after -- is what `run` takes, and only `run`")
    if args.command == "run":
        return run(state_dir, command)
    if args.command == "build":
        print(build())
    elif args.command == "up":
        state = up(state_dir)
        print(state.kubeconfig)
    elif args.command == "down":
        down(state_dir)
    else:
        loaded = State.load(state_dir)
        if loaded and healthy(loaded):
            print(f"running: https://{loaded.address}:{loaded.apiserver_port} kubeconfig={loaded.kubeconfig}")
        else:
            print("not running")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
