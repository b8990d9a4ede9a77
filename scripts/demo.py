"""``make demo``: the whole product on one machine, in one command.

Brings up the local one-node cluster (or uses the current kubeconfig context with
``TRADEWARDEN_CLUSTER=current``) and the exchange emulator, then, by default (``--placement cluster``):
builds this tree's images and loads them onto the node, installs the chart with ``helm install`` in one
step (CRDs, the operator as a pod under PodSecurity ``restricted``, which creates the ``global``
KillSwitch), and applies demo bots that run as runner pods; the emulator listens on the pod bridge.
With ``--placement external`` (the default on a current context, unless ``TRADEWARDEN_IMAGE_TAG`` names
images already on its nodes) the operator and the runners are local processes instead, each runner
authenticated by its bot's own ServiceAccount token. Then it shows ``kubectl get tb -w`` until Ctrl-C,
when it stops everything it started.

``--exit-when-ready`` returns as soon as every bot is Ready (used by the test of this script).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from cluster import localcluster, node, tools  # noqa: E402 - the cluster launcher lives beside its Go module

NAMESPACE = "trading-demo"
RELEASE = "tradewarden"
SYSTEM = "tradewarden-system"
RESTRICTED = ("pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")
BIN = pathlib.Path(sys.executable).parent
STATE = REPO / ".demo"

DEMO_BOTS: list[dict[str, Any]] = [
    {"name": "btc-signals", "config": "momentum-btc", "mode": "signals", "labels": {"team": "alpha"}},
    {"name": "eth-paper", "config": "range-eth", "mode": "paper", "labels": {"team": "alpha"}},
    {"name": "btc-paper-v2", "config": "momentum-v2-btc", "mode": "paper", "labels": {"team": "beta"}},
]
DEMO_CONFIGS: list[dict[str, Any]] = [
    {"name": "momentum-btc", "strategy": "momentum", "instruments": ["BTC/USDT"]},
    {"name": "range-eth", "strategy": "range", "instruments": ["ETH/USDT"]},
    {"name": "momentum-v2-btc", "strategy": "momentum_v2", "instruments": ["BTC/USDT"]},
]


def step(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.started_cluster = False
        self.kubeconfig = ""
        self.tag = os.environ.get("TRADEWARDEN_IMAGE_TAG", "")
        self.installed = False
        STATE.mkdir(exist_ok=True)

    # ---- helpers -------------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True,
                              env=dict(os.environ, KUBECONFIG=self.kubeconfig), timeout=60)
        if check and proc.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc.stdout

    def apply(self, docs: list[dict[str, Any]], namespace: str | None = None) -> None:
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        self.kubectl(*args, input=yaml.safe_dump_all(docs))

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (STATE / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, **(env or {})))
        self.procs.append((name, proc))
        return proc

    # ---- the steps -----------------------------------------------------------------------------------------

    def cluster(self) -> None:
        if os.environ.get("TRADEWARDEN_CLUSTER", "local") == "current":
            self.kubeconfig = os.environ.get("KUBECONFIG", str(pathlib.Path.home() / ".kube" / "config"))
            step(f"using the current kubeconfig context ({self.kubeconfig})")
            return
        state = localcluster.State.load(localcluster.DEFAULT_DIR)
        self.started_cluster = not (state and localcluster.healthy(state))
        step("starting the local cluster: control plane and one node (containerd, kubelet, kube-proxy)")
        state = localcluster.up(localcluster.DEFAULT_DIR)
        self.kubeconfig = state.kubeconfig
        if self.args.placement == "cluster":
            step("building this tree's operator and runner images (buildah) and loading them onto the node")
            self.tag = localcluster.ensure_images(state)

    def install_chart(self) -> None:
        step(f"helm install {RELEASE} charts/tradewarden -n {SYSTEM}: CRDs, the operator as a pod, RBAC")
        self.kubectl("create", "namespace", SYSTEM, check=False)
        self.kubectl("label", "--overwrite", "namespace", SYSTEM, *RESTRICTED)
        helm = str(tools.helm())
        proc = subprocess.run([
            helm, "upgrade", "--install", RELEASE, str(REPO / "charts" / "tradewarden"), "-n", SYSTEM,
            "--set", f"image.tag={self.tag}", "--set", f"runnerImage.tag={self.tag}",
            # Only the demo's namespace: a cluster shared with other work keeps its own operators.
            "--set-json", f'operator.namespaces=["{NAMESPACE}"]',
            "--set-json", f'operator.allowedApiUrls=["http://{node.BRIDGE_IP}:"]',
            # CRDs applied before by kubectl (a test session, an earlier demo) become the release's.
            "--take-ownership", "--wait", "--timeout", "180s"],
            capture_output=True, text=True, env=dict(os.environ, KUBECONFIG=self.kubeconfig))
        if proc.returncode != 0:
            raise SystemExit(f"helm install failed:\n{proc.stdout}\n{proc.stderr}\n"
                             f"{self.kubectl('describe', 'pods', '-n', SYSTEM, check=False)[-3000:]}")
        self.installed = True
        print(self.kubectl("get", "pods", "-n", SYSTEM))

    def install(self) -> None:
        step("installing the CRDs and the global KillSwitch (mode off)")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
        existing = self.kubectl("get", "killswitch", "global", "--ignore-not-found", "-o", "name")
        if not existing.strip():
            self.apply([{"apiVersion": "tradewarden.io/v1alpha1", "kind": "KillSwitch",
                         "metadata": {"name": "global"}, "spec": {"mode": "off"}}])

    def emulator(self) -> str:
        # Runner pods reach it on the pod bridge; runner processes on loopback.
        host = node.BRIDGE_IP if self.args.placement == "cluster" else "127.0.0.1"
        step(f"starting the local exchange emulator on {host} (Binance spot REST dialect, seeded synthetic markets)")
        proc = self.spawn("emulator", [str(BIN / "python"), "-m", "tradewarden.emulator", "--port", "0",
                                       "--host", host, "--seed", "42", "--bar-seconds", str(self.args.bar_seconds)])
        log = STATE / "emulator.log"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            if text.startswith("http"):
                url = text.splitlines()[0].strip()
                print(f"    emulator at {url}")
                return url
            if proc.poll() is not None:
                raise SystemExit(f"the emulator exited; see {log}")
            time.sleep(0.1)
        raise SystemExit(f"the emulator did not start; see {log}")

    def operator(self) -> None:
        step("starting the operator (tradewarden operator)")
        # Its own namespace, as the chart's release namespace: the gate ledger and the signing key live there.
        if not self.kubectl("get", "namespace", "tradewarden-system", "--ignore-not-found", "-o", "name"):
            self.kubectl("create", "namespace", "tradewarden-system")
        proc = self.spawn("operator", [str(BIN / "tradewarden"), "operator", "--metrics-port",
                                       str(self.args.operator_metrics_port), "--ledger-namespace",
                                       "tradewarden-system", "--allowed-api-url", "http://127.0.0.1:"],
                          env={"KUBECONFIG": self.kubeconfig})
        time.sleep(1.0)
        if proc.poll() is not None:
            raise SystemExit(f"the operator exited; see {STATE / 'operator.log'}")
        print(f"    operator log: {STATE / 'operator.log'}, metrics: http://127.0.0.1:{self.args.operator_metrics_port}/metrics")

    def bots(self, url: str) -> None:
        placement = self.args.placement
        step(f"creating namespace {NAMESPACE}, strategy configs and bots (placement {placement})")
        self.kubectl("create", "namespace", NAMESPACE, check=False)
        if placement == "cluster":
            self.kubectl("label", "--overwrite", "namespace", NAMESPACE, *RESTRICTED)
        docs: list[dict[str, Any]] = []
        for sc in DEMO_CONFIGS:
            docs.append({"apiVersion": "tradewarden.io/v1alpha1", "kind": "StrategyConfig",
                         "metadata": {"name": sc["name"]},
                         "spec": {"strategy": sc["strategy"], "instruments": sc["instruments"], "timeframe": "1m"}})
        for bot in DEMO_BOTS:
            docs.append({"apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot",
                         "metadata": {"name": bot["name"], "labels": bot["labels"]},
                         "spec": {"strategyConfigRef": bot["config"], "mode": bot["mode"], "placement": placement,
                                  "exchange": {"id": "binance", "sandbox": False, "apiUrl": url}}})
        self.apply(docs, NAMESPACE)

    def runners(self) -> None:
        step("starting one runner per bot, each with its own ServiceAccount token")
        admin = yaml.safe_load(pathlib.Path(self.kubeconfig).read_text())
        ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
        cluster = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        for bot in DEMO_BOTS:
            account = f"{bot['name']}-runner"
            deadline = time.monotonic() + 60
            while not self.kubectl("get", "sa", account, "-n", NAMESPACE, "--ignore-not-found", "-o", "name").strip():
                if time.monotonic() > deadline:
                    raise SystemExit(f"the operator did not create ServiceAccount {account}; "
                                     f"see {STATE / 'operator.log'}")
                time.sleep(0.5)
            token = self.kubectl("create", "token", account, "-n", NAMESPACE, "--duration=24h").strip()
            kubeconfig = STATE / f"{bot['name']}.kubeconfig"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "runner",
                "clusters": [{"name": "c", "cluster": cluster}], "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "runner", "context": {"cluster": "c", "user": account}}]}))
            kubeconfig.chmod(0o600)
            self.spawn(f"runner-{bot['name']}", [
                str(BIN / "tradewarden"), "runner", "--bot", f"{NAMESPACE}/{bot['name']}", "--journal",
                str(STATE / "journal"), "--metrics-port", "0", "--kubeconfig", str(kubeconfig)])
            print(f"    runner {bot['name']} ({bot['mode']}), log: {STATE / ('runner-' + bot['name'] + '.log')}")

    def wait_ready(self, timeout: float) -> None:
        step("waiting for every bot to be Ready (kubectl get tb -n trading-demo)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = json.loads(self.kubectl("get", "tb", "-n", NAMESPACE, "-o", "json"))["items"]
            ready = [i["metadata"]["name"] for i in items
                     if any(c["type"] == "Ready" and c["status"] == "True"
                            for c in i.get("status", {}).get("conditions", []))]
            if len(ready) == len(DEMO_BOTS):
                print(self.kubectl("get", "tb", "-n", NAMESPACE))
                if self.args.placement == "cluster":
                    print(self.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide"))
                return
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited; see {STATE / (name + '.log')}")
            time.sleep(1)
        print(self.kubectl("get", "tb", "-n", NAMESPACE), file=sys.stderr)
        raise SystemExit(f"not every bot became Ready within {timeout:.0f} s; logs are in {STATE}")

    def next_steps(self) -> None:
        k = f"KUBECONFIG={self.kubeconfig}"
        print(f"""
==> the demo is running. In another terminal, try:

  export {k}
  kubectl get tb,strat -n {NAMESPACE}                  # bots and strategy configs (printer columns)
  kubectl describe tb eth-paper -n {NAMESPACE}         # conditions and Events tell the story
  kubectl get pods -n {NAMESPACE}                      # one runner pod per bot (placement cluster)
  kubectl logs -n {NAMESPACE} eth-paper-runner-0       # the runner's structured log (JSON lines)
  kubectl logs -n {SYSTEM} deploy/{RELEASE}-operator   # the operator's log
  kubectl get lease -n {NAMESPACE}                     # runner heartbeats
  kubectl patch killswitch global --type merge -p '{{"spec":{{"mode":"close_only","reason":"demo"}}}}'
  kubectl get ks global                                # Matched / Acked
  kubectl patch killswitch global --type merge -p '{{"spec":{{"mode":"off","reason":""}}}}'
  kubectl patch strat range-eth -n {NAMESPACE} --type merge -p '{{"spec":{{"params":{{"oversold":25}}}}}}'
  kubectl patch strat range-eth -n {NAMESPACE} --type merge -p '{{"spec":{{"params":{{"oversold":80}}}}}}'  # invalid

Logs: {STATE}/*.log. Press Ctrl-C to stop everything the demo started.
""", flush=True)

    def watch(self) -> None:
        proc = subprocess.Popen(["kubectl", "get", "tb", "-n", NAMESPACE, "-w"],
                                env=dict(os.environ, KUBECONFIG=self.kubeconfig))
        self.procs.append(("kubectl-watch", proc))
        proc.wait()

    def stop(self) -> None:
        if self.installed and not self.started_cluster:
            step(f"deleting the demo's bots (their pods stop) and uninstalling release {RELEASE}")
            self.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=90s", check=False)
            # Not --wait: the bots are gone already, and an operator elsewhere on the cluster may keep the
            # shared runner role that helm deletes, which a wait would then wait on for ever.
            subprocess.run([str(tools.helm()), "uninstall", RELEASE, "-n", SYSTEM], capture_output=True,
                           env=dict(os.environ, KUBECONFIG=self.kubeconfig), check=False, timeout=120)
        step("stopping the runners, the operator and the emulator")
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                print(f"    {name} did not stop in time; killed")
        if self.started_cluster and not self.args.keep_cluster:
            step("stopping the local cluster")
            localcluster.down(localcluster.DEFAULT_DIR)
        print("stopped.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exit-when-ready", action="store_true", help="Stop once every bot is Ready.")
    parser.add_argument("--timeout", type=float, default=180, help="Seconds to wait for Ready.")
    parser.add_argument("--bar-seconds", type=float, default=2.0, help="Real seconds per emulated 1-minute bar.")
    parser.add_argument("--operator-metrics-port", type=int, default=18080)
    parser.add_argument("--keep-cluster", action="store_true", help="Leave the cluster running at the end.")
    parser.add_argument("--placement", choices=["cluster", "external"], default=None,
                        help="Bots as runner pods on the node (default on the local cluster, or on a current "
                             "context with TRADEWARDEN_IMAGE_TAG), or as local processes (external).")
    args = parser.parse_args()
    if args.placement is None:
        current = os.environ.get("TRADEWARDEN_CLUSTER", "local") == "current"
        args.placement = "external" if current and not os.environ.get("TRADEWARDEN_IMAGE_TAG") else "cluster"
    demo = Demo(args)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        demo.cluster()
        url = demo.emulator()
        if args.placement == "cluster":
            demo.install_chart()
            demo.bots(url)
        else:
            demo.install()
            demo.operator()
            demo.bots(url)
            demo.runners()
        demo.wait_ready(args.timeout)
        if args.exit_when_ready:
            return 0
        demo.next_steps()
        demo.watch()
    except KeyboardInterrupt:
        print()
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
