"""The one node of the local cluster: containerd, a CNI bridge, kubelet, kube-proxy and kube-scheduler.

Started by ``localcluster.up`` after the control plane; everything lives in the cluster's state folder
(``<dir>/node``) and logs into ``<dir>/logs``. The pod network is a Linux bridge of this machine
(``tw0``, 10.244.0.0/24); the API server listens on the bridge's own address, so pods reach it through
the ``kubernetes`` Service (kube-proxy, iptables) and the host reaches it directly. A firewall chain
drops anything routed between the bridge and any other interface, and containerd's registry traffic
goes to a proxy address that refuses it: no pod and no pull reaches beyond this machine.

Only one node can run on a machine (one bridge, one set of kube-proxy rules). Leftovers of a crashed
run (processes, mounts, network namespaces, the bridge, firewall rules) are removed by ``cleanup``,
which ``localcluster.up`` and ``down`` call.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

NODE_NAME = "tw-node"
BRIDGE = "tw0"
POD_SUBNET = "10.244.0.0/24"
BRIDGE_IP = "10.244.0.1"
SERVICE_RANGE = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: the first address of the range
DNS_IP = "10.96.0.10"  # the resolver address pods are given; nothing answers there
STORAGE_CLASS = "tradewarden-local"
CNI_BIN = pathlib.Path("/usr/lib/cni")
FIREWALL_CHAIN = "TRADEWARDEN-ISOLATE"
#: The machine-wide marker of the running node: which state folder owns the bridge.
OWNER_FILE = pathlib.Path("/run/tradewarden-node.owner")
#: containerd's sockets: a short path of their own, since a unix socket path is limited to 104 bytes and
#: a state folder under pytest's tmp may be longer (one node per machine, so one fixed place will do).
SOCKET_DIR = pathlib.Path("/run/tradewarden-node")
CONTAINERD_SOCKET = SOCKET_DIR / "containerd.sock"
#: The kubelet's root folder, short for the same reason (it makes unix sockets under it); on disk, since
#: the pods' emptyDir volumes live there.
KUBELET_ROOT = pathlib.Path("/var/lib/tradewarden-node/kubelet")

#: Debian package -> the command (or file) that shows it is installed, and why the node needs it.
PACKAGES: dict[str, tuple[str, str]] = {
    "containerd": ("containerd", "the container runtime the kubelet drives (CRI)"),
    "runc": ("runc", "the OCI runtime containerd starts containers with"),
    "containernetworking-plugins": (str(CNI_BIN / "bridge"), "the CNI bridge and host-local plugins: the pod network"),
    "iptables": ("iptables", "kube-proxy's Service rules and the firewall that keeps pods on this machine"),
    "conntrack": ("conntrack", "kube-proxy clears stale connection-tracking entries with it"),
    "buildah": ("buildah", "builds the operator and runner images from images/ without Docker"),
    "debootstrap": ("debootstrap", "builds the Debian base image the two images start from"),
}


def say(msg: str) -> None:
    print(f"[node] {msg}", file=sys.stderr, flush=True)


def _installed(probe: str) -> bool:
    return pathlib.Path(probe).exists() if probe.startswith("/") else shutil.which(probe) is not None


def ensure_packages() -> None:
    """Install the Debian packages the node needs (apt-get, as root), or say exactly which and why."""
    missing = [pkg for pkg, (probe, _) in PACKAGES.items() if not _installed(probe)]
    if not missing:
        return
    reasons = "; ".join(f"{p}: {PACKAGES[p][1]}" for p in missing)
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if not sudo or subprocess.run([sudo, "-n", "true"], capture_output=True).returncode != 0:
            raise SystemExit(f"[node] the node needs root and these Debian packages: {reasons}. Run as root, or "
                             f"install them: sudo apt-get install -y {' '.join(missing)}")
        prefix = [sudo, "-n"]
    else:
        prefix = []
    if not shutil.which("apt-get"):
        raise SystemExit(f"[node] no apt-get on this machine; install these packages by hand: {reasons}")
    say(f"installing {' '.join(missing)} from Debian's packages ({reasons})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run([*prefix, "apt-get", "update"], env=env, stdout=subprocess.DEVNULL, check=False)
        if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"[node] apt-get install {' '.join(missing)} failed ({reasons}); see its output above")
    if os.geteuid() != 0:
        raise SystemExit("[node] the node's parts (containerd, kubelet, kube-proxy) must run as root")


# --------------------------------------------------------------------------------------------- network


def _run(*argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def bridge_up() -> None:
    """The pod bridge with its gateway address, before the API server starts (it listens there)."""
    if _run("ip", "link", "show", BRIDGE).returncode != 0:
        _run("ip", "link", "add", BRIDGE, "type", "bridge", check=True)
    addrs = _run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
    if f"{BRIDGE_IP}/24" not in addrs:
        _run("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE, check=True)
    _run("ip", "link", "set", BRIDGE, "up", check=True)
    # Nothing routed between the pod bridge and any other interface: pods talk to this machine only. In the
    # mangle table, which every forwarded packet crosses before the filter table, where kube-proxy puts
    # its own ACCEPT rules first.
    ipt = ("iptables", "-w", "-t", "mangle")
    if _run(*ipt, "-n", "-L", FIREWALL_CHAIN).returncode != 0:
        _run(*ipt, "-N", FIREWALL_CHAIN, check=True)
    _run(*ipt, "-F", FIREWALL_CHAIN, check=True)
    _run(*ipt, "-A", FIREWALL_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP", check=True)
    _run(*ipt, "-A", FIREWALL_CHAIN, "!", "-i", BRIDGE, "-o", BRIDGE, "-j", "DROP", check=True)
    if _run(*ipt, "-C", "FORWARD", "-j", FIREWALL_CHAIN).returncode != 0:
        _run(*ipt, "-I", "FORWARD", "1", "-j", FIREWALL_CHAIN, check=True)


def _network_cleanup(kube_proxy: pathlib.Path | None) -> None:
    if kube_proxy and kube_proxy.exists():
        _run(str(kube_proxy), "--cleanup")
    netns = pathlib.Path("/var/run/netns")
    for ns in sorted(netns.glob("cni-*")) if netns.is_dir() else []:
        _run("ip", "netns", "delete", ns.name)
    _run("ip", "link", "delete", BRIDGE)
    for table in ("mangle", "filter"):  # filter: where an older version of this file put it
        while _run("iptables", "-w", "-t", table, "-D", "FORWARD", "-j", FIREWALL_CHAIN).returncode == 0:
            pass
        _run("iptables", "-w", "-t", table, "-F", FIREWALL_CHAIN)
        _run("iptables", "-w", "-t", table, "-X", FIREWALL_CHAIN)


# --------------------------------------------------------------------------------------------- config


def containerd_config(node: pathlib.Path, pause_image: str) -> str:
    return f"""\
version = 2
root = "{node}/containerd/root"
state = "{node}/containerd/state"
[grpc]
  address = "{CONTAINERD_SOCKET}"
[ttrpc]
  address = "{CONTAINERD_SOCKET}.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # In this VM the kernel refuses a lower oom_score_adj than the caller's: without this, every sandbox fails.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{node}/cni/net.d"
"""


def cni_config(node: pathlib.Path) -> dict[str, object]:
    return {
        "cniVersion": "0.4.0",
        "name": "tradewarden",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": f"{node}/cni/ipam",
                      "ranges": [[{"subnet": POD_SUBNET, "gateway": BRIDGE_IP}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(node: pathlib.Path, pki: pathlib.Path, port: int, healthz: int) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": BRIDGE_IP, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz,
        "tlsCertFile": str(pki / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        # No systemd here and cgroups are v1: the kubelet warns that v1 is in maintenance mode.
        "cgroupDriver": "cgroupfs", "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        # Pods get a resolver that points nowhere outside this machine: a Service address nothing serves
        # (no pod here needs names; they reach the API server and the emulator by address).
        "resolvConf": str(node / "resolv.conf"), "clusterDNS": [DNS_IP], "clusterDomain": "cluster.local",
        "failSwapOn": False,
        # A test node: do not evict for a full disk or garbage-collect the images we imported.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "maxPods": 250,
        "registerNode": True,
        "staticPodPath": "",
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(kubeconfig: pathlib.Path, healthz: int, metrics: int) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_SUBNET,
        "hostnameOverride": NODE_NAME,
        "bindAddress": BRIDGE_IP,
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        "metricsBindAddress": f"127.0.0.1:{metrics}",
        # Leave the machine's conntrack table size alone (a VM may not allow writing it).
        "conntrack": {"maxPerCore": 0},
        "nodePortAddresses": [f"{BRIDGE_IP}/32"],
    }


# --------------------------------------------------------------------------------------------- processes


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(log: pathlib.Path, lines: int = 25) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def fail(part: str, log: pathlib.Path, why: str) -> SystemExit:
    return SystemExit(f"[node] {part} {why}; last lines of {log}:\n{tail(log)}")


def wait_for(part: str, log: pathlib.Path, proc: subprocess.Popen[bytes], ready: object,
             timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise fail(part, log, f"exited with code {proc.returncode}")
        if ready():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise fail(part, log, f"not ready after {timeout:.0f} s")
        time.sleep(0.2)


def write_files(node: pathlib.Path, pki: pathlib.Path, kubeconfigs: dict[str, pathlib.Path],
                pause_image: str) -> dict[str, int]:
    """Every configuration file of the node's parts; returns the ports chosen."""
    for sub in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "volumes"):
        (node / sub).mkdir(parents=True, exist_ok=True)
    (node / "containerd.toml").write_text(containerd_config(node, pause_image))
    (node / "cni/net.d/10-tradewarden.conflist").write_text(json.dumps(cni_config(node), indent=2))
    (node / "resolv.conf").write_text(f"# no resolver: pods reach the API server by IP\nnameserver {BRIDGE_IP}\n"
                                      "options timeout:1 attempts:1\n")
    ports = {"kubelet": _free_port(), "kubelet-healthz": _free_port(), "proxy-healthz": _free_port(),
             "proxy-metrics": _free_port(), "scheduler": _free_port()}
    (node / "kubelet.json").write_text(json.dumps(
        kubelet_config(node, pki, ports["kubelet"], ports["kubelet-healthz"]), indent=2))
    (node / "kube-proxy.json").write_text(json.dumps(
        kube_proxy_config(kubeconfigs["kube-proxy"], ports["proxy-healthz"], ports["proxy-metrics"]), indent=2))
    return ports


def start(state_dir: pathlib.Path, bins: pathlib.Path, spawn: object, kubeconfigs: dict[str, pathlib.Path],
          pause_image: str, load_images: object) -> dict[str, int]:
    """Start containerd, the images, kubelet, kube-proxy and kube-scheduler; return their pids."""
    node, pki, logs = state_dir / "node", state_dir / "pki", state_dir / "logs"
    ports = write_files(node, pki, kubeconfigs, pause_image)
    pids: dict[str, int] = {}
    SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    sock = CONTAINERD_SOCKET
    # Registry pulls go to a proxy address that refuses them at once: images come from `make images` only.
    env = dict(os.environ, HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    started = time.monotonic()
    ctrd = spawn("containerd", ["containerd", "--config", str(node / "containerd.toml")], env)  # type: ignore[operator]
    pids["containerd"] = ctrd.pid

    def ctrd_ready() -> bool:
        return sock.exists() and _run("ctr", "--address", str(sock), "version").returncode == 0

    wait_for("containerd", logs / "containerd.log", ctrd, ctrd_ready, 30)
    load_images(sock)  # type: ignore[operator]
    sched = spawn("kube-scheduler", [
        str(bins / "kube-scheduler"), f"--kubeconfig={kubeconfigs['kube-scheduler']}",
        f"--authentication-kubeconfig={kubeconfigs['kube-scheduler']}",
        f"--authorization-kubeconfig={kubeconfigs['kube-scheduler']}",
        "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}", "--v=1",
    ], None)  # type: ignore[operator]
    pids["kube-scheduler"] = sched.pid
    kubelet = spawn("kubelet", [
        str(bins / "kubelet"), f"--config={node}/kubelet.json", f"--kubeconfig={kubeconfigs['kubelet']}",
        f"--root-dir={KUBELET_ROOT}", f"--hostname-override={NODE_NAME}", f"--node-ip={BRIDGE_IP}",
        f"--cert-dir={node}/kubelet/pki", "--v=1",
    ], None)  # type: ignore[operator]
    pids["kubelet"] = kubelet.pid
    proxy = spawn("kube-proxy", [str(bins / "kube-proxy"), f"--config={node}/kube-proxy.json", "--v=1"],
                  None)  # type: ignore[operator]
    pids["kube-proxy"] = proxy.pid
    say(f"containerd, images, kube-scheduler, kubelet and kube-proxy started in {time.monotonic() - started:.1f} s")
    return pids


def _our_processes(state_dir: pathlib.Path) -> list[int]:
    """Processes whose command line names the state folder or containerd's socket: the parts, the container
    shims (``-address <socket>``) and anything else a crash left behind."""
    markers = (str(state_dir).encode() + b"/", str(state_dir).encode() + b"\0", str(CONTAINERD_SOCKET).encode())
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if any(marker in cmdline for marker in markers):
                found.append(int(proc.name))
    return found


def _unmount_under(root: pathlib.Path) -> None:
    prefix = str(root)
    for _ in range(3):
        mounts = []
        with contextlib.suppress(OSError):
            for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4].encode().decode("unicode_escape")
                if point == prefix or point.startswith(prefix + "/"):
                    mounts.append(point)
        if not mounts:
            return
        for point in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", point)


def cleanup(state_dir: pathlib.Path, bins: pathlib.Path | None) -> None:
    """Remove what a node in ``state_dir`` (running or crashed) left: processes, mounts, network, owner."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _our_processes(state_dir)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (5 if sig == signal.SIGTERM else 2)
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if pathlib.Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.1)
    _unmount_under(state_dir)
    _unmount_under(KUBELET_ROOT)
    _network_cleanup(bins / "kube-proxy" if bins else None)
    shutil.rmtree(SOCKET_DIR, ignore_errors=True)
    shutil.rmtree(KUBELET_ROOT, ignore_errors=True)
    with contextlib.suppress(OSError):
        if OWNER_FILE.read_text().strip() == str(state_dir):
            OWNER_FILE.unlink()


def _zombie(pid: int) -> bool:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def claim(state_dir: pathlib.Path, alive: object) -> None:
    """Take the machine's single node for ``state_dir``; clean up after an owner that is gone."""
    with contextlib.suppress(OSError):
        owner = pathlib.Path(OWNER_FILE.read_text().strip())
        if owner != state_dir:
            if alive(owner):  # type: ignore[operator]
                raise SystemExit(f"[node] another local cluster owns this machine's node: {owner} "
                                 f"(stop it with: python tests/cluster/localcluster.py down --dir {owner})")
            say(f"cleaning up after a cluster that is gone: {owner}")
            cleanup(owner, None)
            shutil.rmtree(owner, ignore_errors=True)
    OWNER_FILE.write_text(str(state_dir))
