"""Developer tools built from the Go module proxy and cached outside the repository: helm, and a
Prometheus with Kubernetes service discovery (Debian's package is built without it).

Used by ``make helm`` / ``make chart-lint``, by ``tests/e2e/kind.sh`` and by the chart tests in
``tests/integration/test_chart.py`` (through :func:`helm`), so a fresh machine with only a Go toolchain
gets the exact same helm as everybody else. No binary is ever downloaded from a release page: helm is
compiled with ``go install helm.sh/helm/v3/cmd/helm@VERSION`` from the module proxy, whose checksum
database (sum.golang.org) vouches for the source.

The binary lands in ``$XDG_CACHE_HOME/tradewarden/tools/helm-VERSION/helm`` (``~/.cache`` by default),
keyed by the helm version, and is reused on every later call. The first build takes about two minutes.

Usage::

    python tests/cluster/tools.py helm     # build or reuse helm; prints the path of the binary
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable

#: The helm release the chart is tested with. v3.22.0 is the newest v3 and builds with Go 1.26.
HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3"
#: Prometheus 3.0.1 (its Go module numbers 3.x releases v0.300.x). Debian's prometheus 2.42 is built
#: without kubernetes_sd_configs; the pod-discovery test needs a build that has it.
PROMETHEUS_VERSION = "v0.300.1"
PROMETHEUS_MODULE = "github.com/prometheus/prometheus"


def say(msg: str) -> None:
    print(f"[tools] {msg}", file=sys.stderr, flush=True)


def tools_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "tradewarden" / "tools"


def helm_dir(version: str = HELM_VERSION) -> pathlib.Path:
    return tools_root() / f"helm-{version}"


def _go_env() -> dict[str, str]:
    """The build environment: module proxy only, never ``direct`` VCS fetches from elsewhere."""
    if shutil.which("go") is None:
        raise SystemExit("go is not on PATH: helm is built from the Go module proxy and needs a Go toolchain "
                         "(https://go.dev/doc/install)")
    env = dict(os.environ)
    proxy = env.get("GOPROXY", "https://proxy.golang.org")
    # Keep a user's own proxy (a corporate mirror), but drop the `direct` fallback: it would clone
    # from the VCS host, which is exactly the "download from elsewhere" this helper avoids.
    env["GOPROXY"] = ",".join(p for p in re.split(r"[,|]", proxy) if p and p != "direct") or "off"
    env.setdefault("CGO_ENABLED", "0")
    return env


def _kube_minor_of(version: str, env: dict[str, str]) -> tuple[str, str]:
    """The Kubernetes version helm's client-go speaks, as helm's own Makefile derives it.

    helm bakes it in with -ldflags; without it `helm template` and `helm lint` assume Kubernetes 1.20.
    """
    out = subprocess.run(["go", "mod", "download", "-json", f"{HELM_MODULE}@{version}"], env=env,
                         capture_output=True, text=True, check=True).stdout
    gomod = pathlib.Path(json.loads(out)["GoMod"]).read_text()
    match = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", gomod, re.MULTILINE)
    if not match:
        raise SystemExit(f"cannot find k8s.io/client-go in helm {version}'s go.mod")
    return "1", match.group(1)


def build_helm(version: str = HELM_VERSION) -> pathlib.Path:
    """Build helm ``version`` unless the cache has it; return the path of the binary."""
    target = helm_dir(version) / "helm"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    env = _go_env()
    say(f"building helm {version} from the Go module proxy ({env['GOPROXY']}); this takes a few minutes once")
    major, minor = _kube_minor_of(version, env)
    ldflags = " ".join([
        "-s -w",
        f"-X helm.sh/helm/v3/internal/version.version={version}",
        f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}",
        f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
        f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor={major}",
        f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
    ])
    _build_into(target, lambda scratch: subprocess.run(
        ["go", "install", "-trimpath", "-ldflags", ldflags, f"{HELM_MODULE}/cmd/helm@{version}"],
        env=dict(env, GOBIN=str(scratch)), check=True))
    return target


def _build_into(target: pathlib.Path, build: Callable[[pathlib.Path], object]) -> None:
    """Run ``build(scratch)``, which leaves the binary in a scratch folder, then rename that folder to
    ``target``'s: an interrupted or concurrent build never leaves a half-written binary where the next
    run would trust it."""
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{target.parent.name}.", dir=target.parent.parent))
    try:
        build(scratch)
        if target.parent.exists() and not target.is_file():
            shutil.rmtree(target.parent)  # a leftover without its binary (an old manual build, say)
        try:
            scratch.rename(target.parent)
        except OSError:
            if not target.is_file():  # somebody else won the race only if the binary is there now
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"built {target}")


def prometheus(version: str = PROMETHEUS_VERSION) -> pathlib.Path:
    """A prometheus binary with every service discovery, Kubernetes' included, built on first use.

    Prometheus's go.mod has exclude directives, so `go install module@version` refuses it: the module is
    downloaded from the proxy and built inside its own (read-only) folder with its own go.sum."""
    target = tools_root() / f"prometheus-{version}" / "prometheus"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    env = _go_env()
    say(f"building prometheus {version} from the Go module proxy ({env['GOPROXY']}); this takes a few minutes once")
    out = subprocess.run(["go", "mod", "download", "-json", f"{PROMETHEUS_MODULE}@{version}"], env=env,
                         capture_output=True, text=True, check=True).stdout
    source = json.loads(out)["Dir"]
    _build_into(target, lambda scratch: subprocess.run(
        ["go", "build", "-trimpath", "-mod=readonly", "-ldflags", "-s -w", "-o", str(scratch / "prometheus"),
         "./cmd/prometheus"], cwd=source, env=dict(env, GOFLAGS=""), check=True))
    return target


def helm(version: str = HELM_VERSION) -> pathlib.Path:
    """The helm binary the tests use: built on first use, then reused."""
    return build_helm(version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build or reuse developer tools from the Go module proxy.")
    sub = parser.add_subparsers(dest="tool", required=True)
    hp = sub.add_parser("helm", help="Build (or reuse) helm and print the path of the binary.")
    hp.add_argument("--version", default=HELM_VERSION, help=f"helm version (default {HELM_VERSION}).")
    sub.add_parser("prometheus", help="Build (or reuse) prometheus with Kubernetes service discovery.")
    args = parser.parse_args(argv)
    print(build_helm(args.version) if args.tool == "helm" else prometheus())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
