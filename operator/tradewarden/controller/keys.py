"""The operator's gate key: it signs every runtime config, so a runner can tell the operator's live
permission from anybody else's.

Called once at start by :mod:`tradewarden.controller.main` (:func:`ensure_signer`), before anything is
reconciled. Everything lives in the operator's own namespace (``--ledger-namespace``), where bot authors,
and whoever may write ConfigMaps in a bots' namespace, cannot write:

* the Secret ``tradewarden-gate-signing-key`` with the Ed25519 private key (created by the first operator
  that finds none; never logged, never copied anywhere else);
* the ConfigMap ``tradewarden-gate-key`` with the public key, which runners read through the API server
  (``--gate-key`` / ``$TRADEWARDEN_GATE_KEY``), and a Role and RoleBinding letting every ServiceAccount
  ``get`` that one ConfigMap (a public key is no secret; the point is that only the operator can write it).

A key that changes (someone deleted the Secret) makes every runner refuse the old signatures until it
reads the new key: live bots trade on paper until their runner restarts. That is the safe direction.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tradewarden.api.runtime import (
    GATE_KEY_CONFIGMAP,
    GATE_KEY_DATA,
    GATE_KEY_ID_DATA,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    GateKey,
    RuntimeConfig,
    key_id_of,
    sign_runtime,
)
from tradewarden.controller import kube as k

logger = logging.getLogger(__name__)

SIGNING_SECRET = "tradewarden-gate-signing-key"  # noqa: S105 - a Secret name, not a secret
SIGNING_SECRET_DATA = "ed25519"  # noqa: S105 - a data key name
READER_ROLE = "tradewarden-gate-key-reader"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT_GATE_KEY = "gate-key"


class GateKeyError(RuntimeError):
    """The gate key could not be read or created: the operator cannot sign, so it does not start."""


@dataclass(frozen=True)
class GateSigner:
    """Signs runtime configs with the operator's private key."""

    private: Ed25519PrivateKey
    namespace: str

    @property
    def key_id(self) -> str:
        return key_id_of(self.private.public_key())

    @property
    def public(self) -> GateKey:
        return GateKey(self.key_id, self.private.public_key())

    def sign(self, config: RuntimeConfig, issued_at_ms: int) -> RuntimeConfig:
        return sign_runtime(config, self.private, issued_at_ms)

    @classmethod
    def generate(cls, namespace: str) -> GateSigner:
        return cls(Ed25519PrivateKey.generate(), namespace)


def _labels() -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: COMPONENT_GATE_KEY}


def build_public_objects(signer: GateSigner) -> list[k.Manifest]:
    """The verifying key's ConfigMap and the Role and RoleBinding that let every ServiceAccount read it."""
    ns = signer.namespace
    raw = signer.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": GATE_KEY_CONFIGMAP, "namespace": ns, "labels": _labels()},
         "data": {GATE_KEY_DATA: base64.b64encode(raw).decode(), GATE_KEY_ID_DATA: signer.key_id}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": READER_ROLE, "namespace": ns, "labels": _labels()},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [GATE_KEY_CONFIGMAP],
                    "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": READER_ROLE, "namespace": ns, "labels": _labels()},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": READER_ROLE},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:serviceaccounts"}]},
    ]


def _decode(secret: k.Manifest, namespace: str) -> GateSigner:
    raw = ((secret.get("data") or {}).get(SIGNING_SECRET_DATA)) or ""
    try:
        return GateSigner(Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw, validate=True)), namespace)
    except (ValueError, binascii.Error):
        raise GateKeyError(f"Secret {namespace}/{SIGNING_SECRET}: data.{SIGNING_SECRET_DATA} is not a base64 "
                        f"Ed25519 private key; delete the Secret and the operator makes a new key "
                        f"(live bots trade on paper until their runners read it)") from None


def ensure_signer(kube: k.Kube, namespace: str) -> GateSigner:
    """Read the signing key from the operator's namespace, creating it when there is none, and publish
    the verifying key. Blocking; raises :class:`GateKeyError` with what to do."""
    try:
        secret = kube.get(k.SECRETS, namespace, SIGNING_SECRET)
        if secret is None:
            fresh = GateSigner.generate(namespace)
            raw = fresh.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            try:
                secret = kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                      "metadata": {"name": SIGNING_SECRET, "namespace": namespace,
                                                   "labels": _labels()},
                                      "data": {SIGNING_SECRET_DATA: base64.b64encode(raw).decode()}})
                logger.info("created the gate signing key %s in Secret %s/%s", fresh.key_id, namespace,
                            SIGNING_SECRET)
            except k.AlreadyExists:  # another operator instance was first: use its key
                secret = kube.get(k.SECRETS, namespace, SIGNING_SECRET)
        if secret is None:
            raise GateKeyError(f"Secret {namespace}/{SIGNING_SECRET} vanished while it was being created")
        signer = _decode(secret, namespace)
        for manifest in build_public_objects(signer):
            kube.apply(manifest)
    except k.KubeError as exc:
        raise GateKeyError(f"cannot read or create the gate key in namespace {namespace}: {exc}; the operator "
                        f"needs get/create on Secrets and apply on ConfigMaps, Roles and RoleBindings there "
                        f"(--ledger-namespace names it, and it must exist)") from None
    logger.info("signing runtime configs with gate key %s; runners read it from ConfigMap %s/%s", signer.key_id,
                namespace, GATE_KEY_CONFIGMAP)
    return signer

