"""API access for the operator: the one module that talks to the Kubernetes API server.

Called by the reconcilers in :mod:`tradewarden.controller.handlers` (always from a worker thread, never
from the event loop: the official client is synchronous) and by :mod:`tradewarden.controller.main`,
which builds the client. Nothing else in the controller does I/O against the API server; kopf's own
watch streams are kopf's business.

Objects travel as plain JSON documents (:data:`Manifest`), exactly as the API server speaks them, not
as the generated client's models: the operator builds manifests, compares them with what it watched,
and sends them back, so a round trip through another object model would only add ways to differ.

Errors are translated once, here:

* 409 Conflict (someone else changed the object first) becomes a short ``kopf.TemporaryError``
  (``delay=1``): the next reconcile reads the newer object and tries again. Never a crash.
* 409 AlreadyExists becomes :class:`AlreadyExists`, which "create if missing" callers ignore.
* 404 becomes :class:`NotFound`; 429 and 5xx become ``kopf.TemporaryError`` with a longer delay.
* Anything else becomes :class:`KubeError` whose message says what was refused, where, and why.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tradewarden import __version__
from tradewarden.api.conditions import bound_message

logger = logging.getLogger(__name__)

#: A Kubernetes object as JSON: what the API server returns and what the operator sends.
Manifest = dict[str, Any]

#: The field manager of every server-side apply, so `kubectl get -o yaml --show-managed-fields` names us.
FIELD_MANAGER = "tradewarden-operator"

#: Sent with every request of this client; the quiet benchmark counts audit entries by it. An instance
#: name in $TRADEWARDEN_INSTANCE is appended, so tests can tell two operators on one API server apart.
USER_AGENT = f"tradewarden-operator/{__version__}" + (
    f" instance/{os.environ['TRADEWARDEN_INSTANCE']}" if os.environ.get("TRADEWARDEN_INSTANCE") else "")

#: Per-request timeout (connect, read) in seconds: a hung API server must not hang a reconcile forever.
REQUEST_TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class ResourceRef:
    """Where a kind lives in the API: group, version, plural, and whether it is namespaced."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural}: a namespace is required (this kind is namespaced)")
            base += f"/namespaces/{urllib.parse.quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{urllib.parse.quote(name)}"
        if subresource:
            base += f"/{subresource}"
        return base


TRADINGBOTS = ResourceRef("tradewarden.io", "v1alpha1", "tradingbots", "TradingBot")
STRATEGYCONFIGS = ResourceRef("tradewarden.io", "v1alpha1", "strategyconfigs", "StrategyConfig")
KILLSWITCHES = ResourceRef("tradewarden.io", "v1alpha1", "killswitches", "KillSwitch", namespaced=False)
GATEOVERRIDES = ResourceRef("tradewarden.io", "v1alpha1", "gateoverrides", "GateOverride")
CONFIGMAPS = ResourceRef("", "v1", "configmaps", "ConfigMap")
#: Read only, and only the API key Secrets of the configured external reviewers (controller.promotion).
SECRETS = ResourceRef("", "v1", "secrets", "Secret")
SERVICEACCOUNTS = ResourceRef("", "v1", "serviceaccounts", "ServiceAccount")
EVENTS = ResourceRef("", "v1", "events", "Event")
ROLES = ResourceRef("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLEBINDINGS = ResourceRef("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
CLUSTERROLES = ResourceRef("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTERROLEBINDINGS = ResourceRef("rbac.authorization.k8s.io", "v1", "clusterrolebindings",
                                  "ClusterRoleBinding", namespaced=False)
LEASES = ResourceRef("coordination.k8s.io", "v1", "leases", "Lease")
STATEFULSETS = ResourceRef("apps", "v1", "statefulsets", "StatefulSet")

#: Every kind the operator writes, by kind name (desired manifests carry their kind).
REFS_BY_KIND: dict[str, ResourceRef] = {
    ref.kind: ref for ref in (
        TRADINGBOTS, STRATEGYCONFIGS, KILLSWITCHES, GATEOVERRIDES, CONFIGMAPS, SERVICEACCOUNTS, ROLES, ROLEBINDINGS,
        CLUSTERROLES, CLUSTERROLEBINDINGS, LEASES, STATEFULSETS, EVENTS, SECRETS,
    )
}


class KubeError(Exception):
    """The API server refused a request for a reason a retry will not fix by itself.

    The message names the verb, the object and the API server's own explanation, so a human reading
    the operator's log knows what to fix (usually RBAC, admission, or an immutable field).
    """

    def __init__(self, verb: str, what: str, status: int, reason: str, message: str) -> None:
        self.verb = verb
        self.what = what
        self.status = status
        self.reason = reason
        super().__init__(f"{verb} {what}: HTTP {status} {reason}: {message}")


class NotFound(KubeError):
    """The object does not exist (404). Readers treat it as absent; deleters as already done."""


class AlreadyExists(KubeError):
    """A create raced with another create of the same name (409 AlreadyExists); the object is there."""


#: Called after every write with (verb, plural); main.py counts them in a metric.
WriteObserver = Callable[[str, str], None]


class Kube:
    """A thin, thread-safe JSON client over the official client's connection handling and auth.

    The generated client handles TLS, client certificates, bearer tokens (with in-cluster refresh) and
    connection pooling; this class only builds paths and bodies and maps errors.
    """

    def __init__(self, api_client: k8s_client.ApiClient, on_write: WriteObserver | None = None) -> None:
        self._api = api_client
        self._api.user_agent = USER_AGENT
        self._on_write = on_write

    @classmethod
    def from_environment(cls, on_write: WriteObserver | None = None, kubeconfig: str | None = None) -> Kube:
        """In a pod: the ServiceAccount. Elsewhere: ``kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config``."""
        configuration = k8s_client.Configuration()
        # The config loaders carry no type annotations; their effect is on ``configuration``.
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig or os.environ.get("KUBECONFIG") or None, client_configuration=configuration)
        # Enough pooled connections for the reconcile workers plus event posting.
        configuration.connection_pool_maxsize = 16
        return cls(k8s_client.ApiClient(configuration), on_write=on_write)

    # ------------------------------------------------------------------------------------- plumbing

    def _request(self, method: str, path: str, *, what: str, plural: str, body: Any = None,
                 query: dict[str, str] | None = None, content_type: str = "application/json") -> Manifest:
        headers = {"Accept": "application/json"}
        if body is not None:
            # The client JSON-encodes the body for JSON and structured-YAML content types alike
            # (server-side apply accepts JSON, which is YAML).
            headers["Content-Type"] = content_type
        request = self._api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, body=None, auth_settings=["BearerToken"],
        )
        url, headers_out = request[1], request[2]
        try:
            response = self._api.call_api(method, url, header_params=headers_out, body=body,
                                          _request_timeout=REQUEST_TIMEOUT)
            response.read()  # type: ignore[no-untyped-call]  # (untyped in the client; loads the body)
        except ApiException as exc:
            raise _translate(method, what, exc.status or 0, exc.body or str(exc)) from None
        except urllib3.exceptions.HTTPError as exc:
            raise kopf.TemporaryError(f"{method} {what}: API server unreachable ({exc})", delay=5) from None
        status = int(response.status)
        raw = response.data or b""
        if not 200 <= status <= 299:
            raise _translate(method, what, status, raw.decode("utf-8", "replace"))
        if method != "GET" and self._on_write is not None:
            self._on_write(method.lower(), plural)
        if not raw:
            return {}
        parsed: Manifest = json.loads(raw)
        return parsed

    # ------------------------------------------------------------------------------------- verbs

    def get(self, ref: ResourceRef, namespace: str | None, name: str) -> Manifest | None:
        """The object, or None when it does not exist."""
        try:
            return self._request("GET", ref.path(namespace, name), what=_what(ref, namespace, name),
                                 plural=ref.plural)
        except NotFound:
            return None

    def list(self, ref: ResourceRef, namespace: str | None = None,
             label_selector: str | None = None) -> list[Manifest]:
        """Every object of a kind (in a namespace, or cluster-wide), optionally filtered by labels."""
        query = {"labelSelector": label_selector} if label_selector else None
        path = ref.path(namespace) if (ref.namespaced and namespace) else _cluster_path(ref)
        items: list[Manifest] = self._request("GET", path, what=f"{ref.plural} list", plural=ref.plural,
                                              query=query).get("items", [])
        return items

    def create(self, manifest: Manifest) -> Manifest:
        """POST a new object. Raises :class:`AlreadyExists` when the name is taken."""
        ref = REFS_BY_KIND[manifest["kind"]]
        meta = manifest["metadata"]
        namespace = meta.get("namespace")
        return self._request("POST", ref.path(namespace), body=manifest, plural=ref.plural,
                             what=_what(ref, namespace, meta.get("name", "")))

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply of our fields (created when missing), forcing ownership of our fields.

        Force is right here: these objects are the operator's; a human who edits a field we set is
        overruled on the next reconcile, which is the whole point of level-triggered reconciling.
        """
        ref = REFS_BY_KIND[manifest["kind"]]
        meta = manifest["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        return self._request(
            "PATCH", ref.path(namespace, name), body=manifest, what=_what(ref, namespace, name),
            plural=ref.plural, query={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    def merge_patch(self, ref: ResourceRef, namespace: str | None, name: str, patch: Manifest,
                    subresource: str | None = None) -> Manifest:
        """A JSON merge patch (RFC 7386), e.g. of ``/status`` with only the fields that changed."""
        return self._request(
            "PATCH", ref.path(namespace, name, subresource), body=patch,
            what=_what(ref, namespace, name) + (f"/{subresource}" if subresource else ""),
            plural=ref.plural, query={"fieldManager": FIELD_MANAGER},
            content_type="application/merge-patch+json",
        )

    def delete(self, ref: ResourceRef, namespace: str | None, name: str, uid: str | None = None) -> bool:
        """Delete (background propagation); False when it was already gone.

        With ``uid`` the delete is conditional: it removes exactly the object we looked at, never a
        newer one that took the same name in the meantime.
        """
        body: Manifest = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._request("DELETE", ref.path(namespace, name), body=body, what=_what(ref, namespace, name),
                          plural=ref.plural)
        except NotFound:
            return False
        return True

    def post_event(self, involved: Manifest, type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event about ``involved`` (a TradingBot, StrategyConfig or KillSwitch).

        Events are the audit trail a human reads in ``kubectl describe``; losing one must not fail a
        reconcile, so errors are logged, not raised. Messages never carry secret values: callers only
        ever mention Secrets by name, and quote user values only as ``api.conditions.describe_value``
        allows. The message is bounded here, the one place every Event passes (``bound_message``: 1024
        characters and bytes, the API server's limit for an event note), so a long one is cut, not refused.
        """
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event: Manifest = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name', 'object')}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", ""),
                "kind": involved.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace") or "",
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "type": type_,
            "reason": reason,
            "message": bound_message(message),
            "source": {"component": "tradewarden-operator"},
            "reportingComponent": "tradewarden.io/operator",
            "reportingInstance": os.environ.get("HOSTNAME", "tradewarden-operator")[:128],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self._request("POST", EVENTS.path(namespace), body=event, plural=EVENTS.plural,
                          what=f"event {reason} for {involved.get('kind')} {meta.get('name')}")
        except (KubeError, kopf.TemporaryError) as exc:
            logger.warning("could not record the event %s for %s %s/%s: %s", reason, involved.get("kind"),
                           namespace, meta.get("name"), exc)


def _cluster_path(ref: ResourceRef) -> str:
    base = f"/apis/{ref.group}/{ref.version}" if ref.group else f"/api/{ref.version}"
    return f"{base}/{ref.plural}"


def _what(ref: ResourceRef, namespace: str | None, name: str) -> str:
    return f"{ref.kind} {namespace}/{name}" if namespace else f"{ref.kind} {name}"


def _translate(verb: str, what: str, status: int, text: str) -> Exception:
    reason, message = "", text.strip()
    try:
        doc = json.loads(text)
        reason, message = str(doc.get("reason", "")), str(doc.get("message", message))
    except (ValueError, AttributeError):
        pass
    if status == 404:
        return NotFound(verb, what, status, reason or "NotFound", message)
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(verb, what, status, reason, message)
    if status == 409:
        # Someone wrote the object between our read and our write. Retrying at once with a fresh read
        # is correct; a storm is prevented by the short delay and the per-object work queue.
        return kopf.TemporaryError(f"{verb} {what}: conflict ({message}); retrying with a fresh read", delay=1)
    if status == 429 or status >= 500 or status == 0:
        return kopf.TemporaryError(f"{verb} {what}: API server busy or unreachable (HTTP {status}: {message})",
                                   delay=5)
    return KubeError(verb, what, status, reason or "Error", message)
