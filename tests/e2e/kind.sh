#!/usr/bin/env bash
# End-to-end test on a kind cluster, for machines that have Docker (`make e2e-kind`). The development
# machines of this project have no Docker engine, so this is the one place where the real images, the
# real chart and a real kubelet meet: build both images, load them into kind, install the chart, apply
# examples/01-signals-bot and wait until the bot is Ready. The cluster is deleted afterwards, also on
# failure, unless KEEP_CLUSTER=1. The bot reads public market data from the exchange's sandbox, so the
# kind node needs outbound internet access.
#
# Environment: CLUSTER_NAME (default tradewarden-e2e), TAG (default e2e), KEEP_CLUSTER (default 0),
# TIMEOUT (seconds to wait for the bot, default 300), PYTHON (default .venv/bin/python, for the helm helper).
set -euo pipefail

cd "$(dirname "$0")/../.."
CLUSTER_NAME=${CLUSTER_NAME:-tradewarden-e2e}
TAG=${TAG:-e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
TIMEOUT=${TIMEOUT:-300}
PYTHON=${PYTHON:-.venv/bin/python}
RELEASE=tradewarden
OPERATOR_NS=tradewarden-system
BOT_NS=tradewarden-e2e
CONTEXT="kind-${CLUSTER_NAME}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'e2e-kind: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ fail fast on missing tools
command -v docker >/dev/null 2>&1 || die "docker is not installed (needed to build the images); install Docker, or run 'make test' instead"
docker info >/dev/null 2>&1 || die "docker is installed but no Docker engine answers ('docker info' failed); start Docker first"
command -v kind >/dev/null 2>&1 || die "kind is not installed; install it with 'go install sigs.k8s.io/kind@latest' (https://kind.sigs.k8s.io)"
command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed"
[ -x "$PYTHON" ] || die "$PYTHON not found; run 'make venv' first"
# helm is built from the Go module proxy and cached, exactly as for the tests (make helm).
HELM=$("$PYTHON" tests/cluster/tools.py helm) || die "could not build helm (see above)"

k() { kubectl --context "$CONTEXT" "$@"; }

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && k get ns >/dev/null 2>&1; then
    say "failed; what the cluster says:"
    k get tb,strat,ks -A -o wide || true
    k -n "$BOT_NS" describe tb || true
    k -n "$OPERATOR_NS" logs deployment/${RELEASE}-operator --tail=100 || true
    k -n "$BOT_NS" get pods -o wide || true
  fi
  if [ "$KEEP_CLUSTER" = 1 ]; then
    say "keeping the cluster $CLUSTER_NAME (kind delete cluster --name $CLUSTER_NAME removes it)"
  else
    say "deleting the kind cluster $CLUSTER_NAME"
    kind delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}

# ------------------------------------------------------------------ cluster and images
say "creating the kind cluster $CLUSTER_NAME"
kind create cluster --name "$CLUSTER_NAME" --wait 120s
trap cleanup EXIT

say "building the operator and runner images (tag $TAG)"
docker build -f images/operator/Dockerfile -t "tradewarden/operator:$TAG" .
docker build -f images/runner/Dockerfile -t "tradewarden/runner:$TAG" .

say "loading the images into the cluster"
kind load docker-image --name "$CLUSTER_NAME" "tradewarden/operator:$TAG" "tradewarden/runner:$TAG"

# ------------------------------------------------------------------ chart
# One step on a fresh cluster: the chart renders no KillSwitch; the operator creates `global` at start.
say "installing the chart (CRDs, RBAC, operator)"
"$HELM" install "$RELEASE" charts/tradewarden --kube-context "$CONTEXT" -n "$OPERATOR_NS" --create-namespace \
  --set image.tag="$TAG" --set runnerImage.tag="$TAG" --wait --timeout 5m
say "waiting for the operator to create the global kill switch"
for _ in $(seq 60); do k get killswitch global >/dev/null 2>&1 && break; sleep 1; done
k get killswitch global

# ------------------------------------------------------------------ a bot
say "applying examples/01-signals-bot in $BOT_NS"
k create namespace "$BOT_NS"
k -n "$BOT_NS" apply -f examples/01-signals-bot/
say "waiting up to ${TIMEOUT}s for the bot to be Ready"
k -n "$BOT_NS" wait tradingbot/btc-signals --for=condition=Ready --timeout="${TIMEOUT}s"
k get tb -A -o wide
say "e2e on kind passed"
