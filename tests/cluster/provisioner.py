"""A dynamic provisioner for the one-node cluster's default StorageClass ``tradewarden-local``.

Honest and small, not a copy of any other: for each PersistentVolumeClaim of this class that waits for a
volume, it makes a folder under ``<cluster dir>/node/volumes`` and creates a ``local`` PersistentVolume
for it (pinned to the node, so the kubelet applies the pod's ``fsGroup``), bound to the claim through
``claimRef``; kube-controller-manager's PV controller does the binding. A volume released by its claim
(reclaim policy Delete) is removed with its folder. It watches claims through the API server and
re-lists every few seconds, so a missed event costs seconds, never a claim.

Run by ``localcluster.up`` as a process of the cluster: ``provisioner.py --kubeconfig K --dir D``.
"""

from __future__ import annotations

import argparse
import base64
import json
import pathlib
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

PROVISIONER = "tradewarden.io/local-dir"
STORAGE_CLASS = "tradewarden-local"
NODE_NAME = "tw-node"


class Api:
    def __init__(self, kubeconfig: pathlib.Path) -> None:
        cfg = json.loads(kubeconfig.read_text())
        cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        self.server = cluster["server"]
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="tw-prov-"))
        for key, name in (("certificate-authority-data", "ca"), ("client-certificate-data", "crt"),
                          ("client-key-data", "key")):
            src = cluster if key.startswith("certificate-authority") else user
            (tmp / name).write_bytes(base64.b64decode(src[key]))
        self.ctx = ssl.create_default_context(cafile=str(tmp / "ca"))
        self.ctx.load_cert_chain(str(tmp / "crt"), str(tmp / "key"))
        shutil.rmtree(tmp, ignore_errors=True)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        # S310: the URL is the cluster's own https server from its kubeconfig.
        req = urllib.request.Request(self.server + path, data=data, method=method,  # noqa: S310
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read() or b"null")


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def volume_for(claim: dict[str, Any], folder: pathlib.Path) -> dict[str, Any]:
    meta = claim["metadata"]
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
            "accessModes": claim["spec"].get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": "Filesystem",
            "local": {"path": str(folder)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]},
        },
    }


def provision(api: Api, volumes: pathlib.Path, claim: dict[str, Any]) -> None:
    meta, spec = claim["metadata"], claim["spec"]
    if spec.get("storageClassName") != STORAGE_CLASS or spec.get("volumeName"):
        return
    if (claim.get("status") or {}).get("phase") != "Pending" or meta.get("deletionTimestamp"):
        return
    folder = volumes / f"pvc-{meta['uid']}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        api.call("POST", "/api/v1/persistentvolumes", volume_for(claim, folder))
        say(f"provisioned {meta['namespace']}/{meta['name']} at {folder}")
    except urllib.error.HTTPError as e:
        if e.code != 409:
            say(f"could not provision {meta['namespace']}/{meta['name']}: {e.code} {e.read()[:300]!r}")


def reclaim(api: Api, volumes: pathlib.Path) -> None:
    for pv in api.call("GET", "/api/v1/persistentvolumes")["items"]:
        meta = pv["metadata"]
        if (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            continue
        if (pv.get("status") or {}).get("phase") not in ("Released", "Failed"):
            continue
        folder = pathlib.Path(pv["spec"]["local"]["path"])
        if folder.parent == volumes:
            shutil.rmtree(folder, ignore_errors=True)
        try:
            api.call("DELETE", f"/api/v1/persistentvolumes/{meta['name']}")
            say(f"removed {meta['name']}")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                say(f"could not remove {meta['name']}: {e.code}")


def run(api: Api, volumes: pathlib.Path) -> None:
    """List, then watch claims until the watch ends; reclaim released volumes on every pass."""
    claims = api.call("GET", "/api/v1/persistentvolumeclaims")
    for claim in claims["items"]:
        provision(api, volumes, claim)
    reclaim(api, volumes)
    rv = claims["metadata"]["resourceVersion"]
    req = urllib.request.Request(f"{api.server}/api/v1/persistentvolumeclaims?watch=1&resourceVersion={rv}"  # noqa: S310
                                 "&timeoutSeconds=5&allowWatchBookmarks=false")
    with urllib.request.urlopen(req, context=api.ctx, timeout=15) as stream:  # noqa: S310
        for line in stream:
            event = json.loads(line)
            if event.get("type") in ("ADDED", "MODIFIED"):
                provision(api, volumes, event["object"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True, type=pathlib.Path)
    parser.add_argument("--dir", required=True, type=pathlib.Path, help="where the volumes' folders go")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    api = Api(args.kubeconfig)
    say(f"provisioner {PROVISIONER} for StorageClass {STORAGE_CLASS}, volumes in {args.dir}")
    while True:
        try:
            run(api, args.dir)
        except (OSError, urllib.error.URLError, json.JSONDecodeError, KeyError) as e:
            say(f"retrying after: {e}")
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
