"""Signing the runtime config, and telling the operator's ConfigMaps from anybody else's.

Pure functions (the key is an argument), called by the bot reconcile in
:mod:`tradewarden.controller.handlers` after the builders rendered the desired runtime config:

* :func:`seal_runtime` signs it, keeping the signature (and ``issuedAt``) already in the ConfigMap when
  the content is the same, so an unchanged bot causes no write; a new signature is never dated before
  the last one, so the runner's "never older than the newest" rule holds across operator restarts and
  clock steps;
* :func:`runtime_tampering` says why a live runtime ConfigMap cannot be the operator's own (made
  ``immutable``, a document that does not verify with the operator's key, a hash that does not match):
  the reconcile then replaces it and reports the write.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import ValidationError

from tradewarden.api.runtime import (
    CONFIGMAP_HASH_KEY,
    CONFIGMAP_RUNTIME_KEY,
    GateKey,
    RuntimeConfig,
    signature_valid,
)
from tradewarden.controller.keys import GateSigner


def _unsigned(config: RuntimeConfig) -> RuntimeConfig:
    return config.model_copy(update={"issued_at": 0, "key_id": "", "signature": ""})


def live_runtime(configmap: dict[str, Any] | None) -> RuntimeConfig | None:
    """The runtime config held by a live ConfigMap, or None when there is none or it does not parse."""
    text = ((configmap or {}).get("data") or {}).get(CONFIGMAP_RUNTIME_KEY)
    if not text:
        return None
    try:
        return RuntimeConfig.model_validate_json(text)
    except (ValidationError, ValueError):
        return None


def seal_runtime(desired: RuntimeConfig, live: dict[str, Any] | None, signer: GateSigner,
                 now: dt.datetime) -> RuntimeConfig:
    """``desired`` signed by ``signer``; the live signature is kept when the content is unchanged."""
    previous = live_runtime(live)
    if previous is not None and signature_valid(previous, signer.public) and \
            _unsigned(previous) == _unsigned(desired):
        return previous
    issued = int(now.timestamp() * 1000)
    if previous is not None and signature_valid(previous, signer.public):
        issued = max(issued, previous.issued_at + 1)
    return signer.sign(desired, issued)


def runtime_tampering(live: dict[str, Any] | None, key: GateKey) -> str | None:
    """Why the live runtime ConfigMap was written by someone other than the operator, or None."""
    if live is None:
        return None
    if live.get("immutable"):
        return "was made immutable"
    data = live.get("data") or {}
    config = live_runtime(live)
    if config is None:
        return f"holds no readable {CONFIGMAP_RUNTIME_KEY}" if CONFIGMAP_RUNTIME_KEY in data else None
    if not signature_valid(config, key):
        return "holds a runtime config the operator did not sign"
    if data.get(CONFIGMAP_HASH_KEY) != config.config_hash:
        return f"has a {CONFIGMAP_HASH_KEY} that does not match its runtime config"
    return None
