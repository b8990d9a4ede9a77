"""The local node's launcher, where it needs no root and no cluster: its messages and its configuration."""

from __future__ import annotations

import json
import pathlib

import pytest

from cluster import node


def test_without_root_it_names_each_missing_package_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "_installed", lambda probe: not probe.endswith(("buildah", "containerd")))
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(node.shutil, "which", lambda name: None)  # no sudo either
    with pytest.raises(SystemExit) as exc:
        node.ensure_packages()
    message = str(exc.value)
    assert "needs root" in message
    assert "containerd: the container runtime the kubelet drives" in message
    assert "buildah: builds the operator and runner images" in message
    assert "sudo apt-get install -y containerd buildah" in message
    assert "runc" not in message  # only what is missing


def test_nothing_missing_means_nothing_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "_installed", lambda probe: True)
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    node.ensure_packages()  # no root needed, no SystemExit


def test_a_part_that_fails_names_itself_and_shows_the_end_of_its_log(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "kubelet.log"
    log.write_text("\n".join(f"line {i}" for i in range(100)) + "\nE1201 failed to run Kubelet: boom\n")
    err = node.fail("kubelet", log, "exited with code 1")
    text = str(err)
    assert text.startswith("[node] kubelet exited with code 1")
    assert "failed to run Kubelet: boom" in text
    assert "line 99" in text
    assert "line 10\n" not in text  # the last lines, not the whole log


def test_the_node_configuration_keeps_pods_on_this_machine(tmp_path: pathlib.Path) -> None:
    kubelet = node.kubelet_config(tmp_path, tmp_path / "pki", 10250, 10248)
    assert kubelet["address"] == node.BRIDGE_IP
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}
    assert (kubelet["cgroupDriver"], kubelet["failCgroupV1"]) == ("cgroupfs", False)
    assert kubelet["clusterDNS"] == [node.DNS_IP]
    cni = node.cni_config(tmp_path)
    bridge = cni["plugins"][0]  # type: ignore[index]
    assert bridge["bridge"] == node.BRIDGE
    assert bridge["ipMasq"] is False
    containerd = node.containerd_config(tmp_path, "tradewarden.local/pause:1")
    assert "restrict_oom_score_adj = true" in containerd
    assert f'address = "{node.CONTAINERD_SOCKET}"' in containerd
    assert f'root = "{tmp_path}/containerd/root"' in containerd
    proxy = node.kube_proxy_config(tmp_path / "k", 1, 2)
    assert proxy["nodePortAddresses"] == [f"{node.BRIDGE_IP}/32"]
    assert json.dumps(proxy)  # plain JSON, as written to disk
