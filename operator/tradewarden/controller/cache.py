"""The watch cache: typed lookups over kopf's in-memory indices of every watched kind.

Filled by the ``@kopf.index`` functions registered in :mod:`tradewarden.controller.handlers` (kopf
updates an index from each watch event before any handler runs, and runs no handler until every
index has its initial listing); read by the reconcilers, on the event loop only, since kopf mutates
the indices there.

Reconciling from the cache rather than with GETs is what makes the operator cheap: an idle fleet
costs no requests at all, and a Lease renewal costs one in-memory comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tradewarden.controller.kube import Manifest

#: Index ids; kopf passes each index to every handler as a keyword argument of this name.
IDX_BOTS = "tw_bots"
IDX_STRATEGYCONFIGS = "tw_strategyconfigs"
IDX_KILLSWITCHES = "tw_killswitches"
IDX_LEASES = "tw_leases"
IDX_GATEOVERRIDES = "tw_gateoverrides"
IDX_PODS = "tw_pods"
#: FailedCreate Events of StatefulSets (why a runner StatefulSet has no pod), keyed by (namespace, its name).
IDX_EVENTS = "tw_events"
#: Owned objects, one index per kind, keyed by (namespace or "", name).
IDX_OWNED: dict[str, str] = {
    "ConfigMap": "tw_configmaps",
    "ServiceAccount": "tw_serviceaccounts",
    "Role": "tw_roles",
    "RoleBinding": "tw_rolebindings",
    "StatefulSet": "tw_statefulsets",
    "ClusterRole": "tw_clusterroles",
    "ClusterRoleBinding": "tw_clusterrolebindings",
}


#: Kinds whose cached copy keeps when each manager last changed the spec: a KillSwitch's acknowledgement
#: latency is measured from the API server's record of its spec change (controller.switches.spec_changed_at).
SPEC_TIMES_KINDS = frozenset({"KillSwitch"})


def slim(body: Mapping[str, Any]) -> Manifest:
    """A private copy of a watched object without ``managedFields`` (large, and never compared).

    For :data:`SPEC_TIMES_KINDS` the entries that own ``f:spec`` stay, trimmed to their manager,
    operation and time (and ``fieldsV1`` to ``{"f:spec": {}}``): a few bytes per manager."""
    out: Manifest = {}
    for key, value in body.items():
        if key == "metadata":
            out[key] = {k: _copy(v) for k, v in value.items() if k != "managedFields"}
            if body.get("kind") in SPEC_TIMES_KINDS:
                out[key]["managedFields"] = _spec_writes(value.get("managedFields"))
        else:
            out[key] = _copy(value)
    return out


def _spec_writes(entries: Any) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and not entry.get("subresource") and \
                isinstance(entry.get("fieldsV1"), Mapping) and "f:spec" in entry["fieldsV1"]:
            kept.append({"manager": entry.get("manager"), "operation": entry.get("operation"),
                         "time": entry.get("time"), "fieldsType": entry.get("fieldsType"),
                         "fieldsV1": {"f:spec": {}}})
    return kept


#: The longest kubelet or scheduler message the cache keeps of a pod (leases.pod_problem quotes less).
MAX_POD_MESSAGE = 1024


def slim_pod(body: Mapping[str, Any]) -> Manifest:
    """Of a runner pod, only what the operator checks: its uid, phase and container starts (against the
    Lease, ``leases.pod_contradiction``), and why it cannot run (``leases.pod_problem``): the PodScheduled
    condition and each container's waiting or terminated reason, exit code, restart count and image."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    kept_meta = {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")}
    if meta.get("deletionTimestamp"):
        kept_meta["deletionTimestamp"] = meta["deletionTimestamp"]
    out_status: dict[str, Any] = {"phase": status.get("phase"),
                                  "containerStatuses": [_slim_container(c) for c in
                                                        status.get("containerStatuses") or []]}
    if status.get("initContainerStatuses"):
        out_status["initContainerStatuses"] = [_slim_container(c) for c in status["initContainerStatuses"]]
    scheduled = [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason"),
                  "message": str(c.get("message") or "")[:MAX_POD_MESSAGE]}
                 for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"]
    if scheduled:
        out_status["conditions"] = scheduled
    return {"metadata": kept_meta, "status": out_status}


def _slim_container(status: Mapping[str, Any]) -> dict[str, Any]:
    state = status.get("state") or {}
    out: dict[str, Any] = {"name": status.get("name"), "image": status.get("image"),
                           "restartCount": status.get("restartCount", 0), "state": _slim_state(state)}
    last = (status.get("lastState") or {}).get("terminated")
    if last:
        out["lastState"] = {"terminated": {"exitCode": last.get("exitCode"), "reason": last.get("reason")}}
    return out


def _slim_state(state: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "running" in state:
        out["running"] = {"startedAt": (state["running"] or {}).get("startedAt")}
    if "waiting" in state:
        waiting = state["waiting"] or {}
        out["waiting"] = {"reason": waiting.get("reason"), "message": str(waiting.get("message") or "")[
            :MAX_POD_MESSAGE]}
    if "terminated" in state:
        terminated = state["terminated"] or {}
        out["terminated"] = {"exitCode": terminated.get("exitCode"), "reason": terminated.get("reason")}
    return out


def slim_event(body: Mapping[str, Any]) -> Manifest:
    """Of a ``FailedCreate`` Event of a StatefulSet, what ``leases.workload_facts`` reads: the StatefulSet's
    uid, the message (bounded) and when it was last seen."""
    meta, involved = body.get("metadata") or {}, body.get("involvedObject") or {}
    return {"involvedObject": {"name": involved.get("name"), "uid": involved.get("uid")},
            "message": str(body.get("message") or "")[:MAX_POD_MESSAGE],
            "time": body.get("lastTimestamp") or body.get("eventTime") or meta.get("creationTimestamp")}


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class Cache:
    """Read access to the indices. Empty (every lookup misses) until :meth:`attach` is called."""

    def __init__(self) -> None:
        self._indices: Mapping[str, Any] = {}

    def attach(self, indices: Mapping[str, Any]) -> None:
        """Keep kopf's index objects; kopf fills them in place for the life of the operator."""
        self._indices = {k: v for k, v in indices.items() if k.startswith("tw_")}

    def _one(self, index_id: str, key: Any) -> Manifest | None:
        index = self._indices.get(index_id)
        if index is None or key not in index:
            return None
        for value in index[key]:
            found: Manifest = value
            return found
        return None

    def _all(self, index_id: str) -> list[Manifest]:
        index = self._indices.get(index_id)
        if index is None:
            return []
        return [value for key in list(index) for value in index[key]]

    def bot(self, namespace: str, name: str) -> Manifest | None:
        return self._one(IDX_BOTS, (namespace, name))

    def bots(self) -> list[Manifest]:
        return self._all(IDX_BOTS)

    def strategyconfig(self, namespace: str, name: str) -> Manifest | None:
        return self._one(IDX_STRATEGYCONFIGS, (namespace, name))

    def strategyconfigs(self) -> list[Manifest]:
        return self._all(IDX_STRATEGYCONFIGS)

    def pod(self, namespace: str, name: str) -> Manifest | None:
        """A runner pod (labelled ``tradewarden.io/bot``), reduced by :func:`slim_pod`."""
        return self._one(IDX_PODS, (namespace, name))

    def failed_creates(self, namespace: str, statefulset: str) -> list[Manifest]:
        """The cached ``FailedCreate`` Events of a StatefulSet, reduced by :func:`slim_event`."""
        index = self._indices.get(IDX_EVENTS)
        if index is None or (namespace, statefulset) not in index:
            return []
        return list(index[(namespace, statefulset)])

    def gateoverride(self, namespace: str, name: str) -> Manifest | None:
        return self._one(IDX_GATEOVERRIDES, (namespace, name))

    def gateoverrides(self, namespace: str | None = None) -> list[Manifest]:
        found = self._all(IDX_GATEOVERRIDES)
        if namespace is None:
            return found
        return [o for o in found if (o.get("metadata") or {}).get("namespace") == namespace]

    def killswitch(self, name: str) -> Manifest | None:
        return self._one(IDX_KILLSWITCHES, name)

    def killswitches(self) -> list[Manifest]:
        return self._all(IDX_KILLSWITCHES)

    def lease(self, namespace: str, bot: str) -> Manifest | None:
        """The runner Lease of ``bot`` (found by its ``tradewarden.io/bot`` label)."""
        return self._one(IDX_LEASES, (namespace, bot))

    def owned_all(self, kind: str, namespace: str | None) -> list[Manifest]:
        """Every owned object of ``kind`` in ``namespace`` (cluster-scoped ones: None)."""
        return [o for o in self._all(IDX_OWNED[kind]) if ((o.get("metadata") or {}).get("namespace") or None)
                == namespace]

    def owned(self, kind: str, namespace: str | None, name: str) -> Manifest | None:
        return self._one(IDX_OWNED[kind], (namespace or "", name))
