"""Does a live object already carry what we want? The test that keeps an idle operator silent.

Pure functions, no I/O. Called by the reconcilers in :mod:`tradewarden.controller.handlers` before
every write: an object is applied only when :func:`needs_apply` says the fields we own differ.

"The fields we own" are the fields we send. Server-side apply merges maps and leaves fields of other
managers alone, so the comparison is a *semantic subset*: every key we send must be present in the live
object with an equal value; extra keys (defaults, other managers' labels) are tolerated. Lists are
compared element by element and must have the same length (RBAC rules and subjects are atomic lists:
an extra rule is a difference). Owner references are matched by uid, as the API server merges them.

StatefulSets are the exception: the API server defaults dozens of fields in a pod template and
canonicalises quantities (``1024Mi`` becomes ``1Gi``), so comparing the spec would find a difference
forever. Their desired spec is summarised in the ``tradewarden.io/spec-hash`` annotation instead,
and only the metadata and ``spec.replicas`` are compared.
"""

from __future__ import annotations

from typing import Any

from tradewarden.controller.kube import Manifest

#: Kinds whose spec is compared through the spec-hash annotation, not field by field.
HASHED_KINDS = frozenset({"StatefulSet"})


def is_subset(desired: Any, live: Any) -> bool:
    """True when ``live`` holds every value of ``desired`` (maps: by key; lists: element-wise)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(key in live and is_subset(value, live[key]) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_subset(d, v) for d, v in zip(desired, live, strict=True))
    return bool(desired == live)


def pod_core(workload: Manifest) -> dict[str, Any]:
    """What decides what a workload's pod runs, as we set it: image, command, env, ServiceAccount and
    security settings of each container (the API server adds defaults beside these, never over them)."""
    pod = (((workload.get("spec") or {}).get("template") or {}).get("spec")) or {}
    return {
        "serviceAccountName": pod.get("serviceAccountName"),
        "securityContext": pod.get("securityContext") or {},
        "containers": [{key: c.get(key) for key in ("name", "image", "command", "args", "env", "securityContext")
                        if c.get(key) is not None} for c in pod.get("containers") or []],
    }


def _owner_refs_present(desired: list[dict[str, Any]], live: list[dict[str, Any]]) -> bool:
    by_uid = {ref.get("uid"): ref for ref in live}
    return all(ref.get("uid") in by_uid and is_subset(ref, by_uid[ref.get("uid")]) for ref in desired)


def metadata_matches(desired: Manifest, live: Manifest) -> bool:
    want = desired.get("metadata", {})
    have = live.get("metadata", {})
    if not is_subset(want.get("labels", {}), have.get("labels") or {}):
        return False
    if not is_subset(want.get("annotations", {}), have.get("annotations") or {}):
        return False
    return _owner_refs_present(want.get("ownerReferences", []), have.get("ownerReferences") or [])


def needs_apply(desired: Manifest, live: Manifest | None) -> bool:
    """True when ``live`` is missing or lacks something of ``desired``."""
    if live is None:
        return True
    if not metadata_matches(desired, live):
        return True
    if desired["kind"] in HASHED_KINDS:
        if desired.get("spec", {}).get("replicas") != (live.get("spec") or {}).get("replicas"):
            return True
        # The spec hash stands for the whole template, but someone else's edit of the template leaves the
        # annotation alone: what decides what runs (image, command, identity, security) is compared too.
        return not is_subset(pod_core(desired), pod_core(live))
    body_desired = {k: v for k, v in desired.items() if k not in ("metadata", "apiVersion", "kind")}
    body_live = {k: v for k, v in live.items() if k not in ("metadata", "apiVersion", "kind")}
    return not is_subset(body_desired, body_live)
