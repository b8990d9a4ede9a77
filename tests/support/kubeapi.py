"""``kubectl get … -o json`` answered by the API server over one kept-alive connection.

The tests poll the cluster a great deal (a bot's status, a Lease, a ConfigMap, Events), and each
``kubectl`` run costs about 0.13 s of CPU to start a Go binary and make a TLS handshake: on a two-core
machine, a quarter of all the CPU a run of the integration tests used. :func:`get` answers the same
question with the same answer from the same API server, with the same credentials (the kubeconfig's),
through the ``kubernetes`` client's connection pool:

- the resource is resolved as kubectl resolves it, from the server's discovery: plural, singular, short
  name, kind, or ``plural.group``; the core group first, then the groups in the server's order;
- one object comes back as the server sent it, a list as kubectl prints it (``kind: List``, each item with
  its ``apiVersion`` and ``kind``), and both without ``managedFields``, as kubectl shows them;
- an error is the server's ``Status``, printed as kubectl prints it: ``Error from server (Reason): message``
  with exit code 1.

Anything else — another output, more than one resource or name, impersonation, any other flag — is not
answered here (``None``) and the caller runs the real ``kubectl``. A resource the discovery does not know
(a CRD installed since) triggers one fresh discovery before that.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import yaml
from kubernetes import config as k8s_config


@dataclass(frozen=True)
class Resource:
    group_version: str  # "v1" or "group/version"
    plural: str
    kind: str
    namespaced: bool
    #: Every word kubectl accepts for it: plural, singular, lower-case kind, short names.
    names: frozenset[str]

    def path(self, namespace: str | None, name: str | None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        where = f"/namespaces/{quote(namespace, safe='')}" if namespace and self.namespaced else ""
        return f"{base}{where}/{self.plural}" + (f"/{quote(name, safe='')}" if name else "")


@dataclass(frozen=True)
class Query:
    resource: str
    name: str | None
    namespace: str | None
    all_namespaces: bool
    selector: str | None
    field_selector: str | None


_VALUE_FLAGS = {"-n": "namespace", "--namespace": "namespace", "-l": "selector", "--selector": "selector",
                "--field-selector": "field_selector", "-o": "output", "--output": "output"}


def parse(args: tuple[str, ...]) -> Query | None:
    """The query of ``kubectl get ARGS`` when it is one this module answers, else None."""
    if not args or args[0] != "get":
        return None
    values: dict[str, str] = {}
    positional: list[str] = []
    all_namespaces = False
    rest = list(args[1:])
    while rest:
        token = rest.pop(0)
        if token in ("-A", "--all-namespaces"):
            all_namespaces = True
        elif token in _VALUE_FLAGS:
            if not rest:
                return None
            values[_VALUE_FLAGS[token]] = rest.pop(0)
        elif token.startswith("--") and "=" in token and token.split("=", 1)[0] in _VALUE_FLAGS:
            flag, value = token.split("=", 1)
            values[_VALUE_FLAGS[flag]] = value
        elif token.startswith("-o") and len(token) > 2:
            values["output"] = token[2:]
        elif token.startswith("-"):
            return None  # a flag this module does not know: the real kubectl
        else:
            positional.append(token)
    if values.get("output") != "json":
        return None
    if len(positional) == 1 and "/" in positional[0]:
        positional = positional[0].split("/", 1)
    if not positional or len(positional) > 2 or "," in positional[0]:
        return None
    name = positional[1] if len(positional) == 2 else None
    if name is not None and (all_namespaces or "selector" in values or "field_selector" in values):
        return None
    return Query(positional[0], name, values.get("namespace"), all_namespaces, values.get("selector"),
                 values.get("field_selector"))


class Reader:
    """One kubeconfig's connection to its API server, and the server's resource table."""

    def __init__(self, kubeconfig: str) -> None:
        self.api = k8s_config.new_client_from_config(config_file=kubeconfig)
        with open(kubeconfig) as f:
            config = yaml.safe_load(f) or {}
        current = config.get("current-context")
        context = next((c.get("context") or {} for c in config.get("contexts") or [] if c.get("name") == current),
                       {})
        self.default_namespace = str(context.get("namespace") or "default")
        self._resources: list[Resource] | None = None
        self._lock = threading.Lock()

    def _request(self, path: str, query: list[tuple[str, str]] = (), timeout: float = 60) -> tuple[int, Any]:
        method, url, headers, _body, _post = self.api.param_serialize(
            "GET", path, query_params=list(query), header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        resp = self.api.call_api(method, url, header_params=headers, _request_timeout=timeout)
        return resp.status, json.loads(resp.read() or b"null")

    def _discover(self) -> list[Resource]:
        versions = ["v1"]
        status, groups = self._request("/apis")
        if status == 200:
            versions += [g["preferredVersion"]["groupVersion"] for g in groups.get("groups", [])]
        table: list[Resource] = []
        for gv in versions:
            status, listing = self._request("/api/v1" if gv == "v1" else f"/apis/{gv}")
            if status != 200:
                continue
            for r in listing.get("resources", []):
                if "/" not in r["name"] and "get" in r.get("verbs", []):
                    names = {r["name"], r.get("singularName") or "", r["kind"].lower(), *(r.get("shortNames") or [])}
                    table.append(Resource(gv, r["name"], r["kind"], bool(r["namespaced"]), frozenset(names - {""})))
        return table

    def resolve(self, token: str) -> Resource | None:
        for fresh in (False, True):
            with self._lock:
                if self._resources is None or fresh:
                    self._resources = self._discover()
                table = self._resources
            word, _, group = token.lower().partition(".")
            for res in table:
                res_group = res.group_version.rpartition("/")[0] if "/" in res.group_version else ""
                # "plural.group" (or "plural.version.group") names the group; a bare word takes the first
                # match, the core group coming first as in kubectl.
                if group and group not in (res_group, f"{res.group_version.rpartition('/')[2]}.{res_group}"):
                    continue
                if word in res.names:
                    return res
        return None

    def get(self, q: Query, timeout: float) -> subprocess.CompletedProcess[str] | None:
        res = self.resolve(q.resource)
        if res is None:
            return None
        namespace = None if q.all_namespaces else (q.namespace or self.default_namespace)
        params = [(k, v) for k, v in (("labelSelector", q.selector), ("fieldSelector", q.field_selector)) if v]
        status, body = self._request(res.path(namespace, q.name), params, timeout)
        args = ["kubectl", "get", q.resource, *([q.name] if q.name else []), "-o", "json"]
        if status != 200:
            reason = (body or {}).get("reason") or "Unknown"
            message = (body or {}).get("message") or f"the server answered {status}"
            return subprocess.CompletedProcess(args, 1, "", f"Error from server ({reason}): {message}\n")
        for obj in body.get("items", []) if q.name is None else [body]:
            (obj.get("metadata") or {}).pop("managedFields", None)  # kubectl hides them unless asked
            obj.setdefault("apiVersion", res.group_version)
            obj.setdefault("kind", res.kind)
        if q.name is None:
            body = {"apiVersion": "v1", "items": body.get("items", []), "kind": "List",
                    "metadata": {"resourceVersion": ""}}
        return subprocess.CompletedProcess(args, 0, json.dumps(body), "")


_readers: dict[tuple[str, int], Reader] = {}
_readers_lock = threading.Lock()


def get(kubeconfig: str, args: tuple[str, ...], timeout: float = 60) -> subprocess.CompletedProcess[str] | None:
    """The answer ``kubectl ARGS`` would give, when ARGS is a ``get … -o json`` this module answers."""
    q = parse(args)
    if q is None:
        return None
    key = (kubeconfig, os.stat(kubeconfig).st_mtime_ns)  # a cluster restarted in place has new credentials
    with _readers_lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = Reader(kubeconfig)
    return reader.get(q, timeout)
