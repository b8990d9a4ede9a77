"""Build tradewarden's two images with buildah, without Docker or a registry, and load them into the node.

Three steps, each cached outside the repository (``~/.cache/tradewarden/images``):

1. **The base.** ``debootstrap --variant=minbase bookworm`` with Debian's python3 (3.11, the version the
   tests run on) and pip, made to behave like the ``python:3.11-slim`` image the Dockerfiles name: ``python``
   and ``pip`` on PATH, no PEP 668 marker. Keyed by its package list.
2. **The wheels.** ``pip wheel`` of every pinned dependency on the host (same CPython 3.11, manylinux
   wheels), keyed by ``constraints.txt``; the image builds use them offline through a pip configuration
   mounted read-only into each ``RUN`` step, so a build after a code change downloads nothing.
3. **The images.** ``buildah bud`` of ``images/operator/Dockerfile`` and ``images/runner/Dockerfile``, with
   the base passed as the ``PYTHON_IMAGE`` build argument (the only change the Dockerfiles need), keyed by
   the Dockerfile and every file of the build context; exported as a docker archive and imported into the
   node's containerd (``ctr -n k8s.io images import``). The pod sandbox ("pause") image is a static C
   program of our own packed by buildah from ``scratch``.

Usage::

    python tests/cluster/images.py build            # build or reuse; prints the archives
    python tests/cluster/images.py load [--dir D]   # build or reuse, then import into the running node
    python tests/cluster/images.py tag              # the tag this tree's images get
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parent.parent
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: What the base image holds beyond minbase: an interpreter and pip like python:3.11-slim, and CA certificates.
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
#: Bumped when the way the base is made changes.
BASE_RECIPE = "1"
#: The names the product uses: the chart's defaults and the operator's default runner image.
OPERATOR_IMAGE = "tradewarden/operator"
RUNNER_IMAGE = "tradewarden/runner"
PAUSE_IMAGE = "tradewarden.local/pause:1"
#: The tag the tests, the demo and the chart install on the node use.
LOCAL_TAG = "local"

PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void stop(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, stop); signal(SIGTERM, stop); signal(SIGCHLD, reap);
    for (;;) pause();
}
"""


def say(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "tradewarden" / "images"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:12]


def buildah(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    root = cache_root() / "storage"
    # The run root (locks, mounts) is per store: two stores sharing one would refuse each other.
    runroot = f"/run/tradewarden-buildah-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"
    argv = ["buildah", "--root", str(root), "--runroot", runroot, "--storage-driver", "overlay", *args]
    kw.setdefault("check", True)
    return subprocess.run(argv, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def _image_exists(ref: str) -> bool:
    try:
        buildah("inspect", "--type", "image", ref, capture_output=True)
    except subprocess.CalledProcessError:
        return False
    return True


def _timed(label: str, started: float) -> None:
    say(f"{label} in {time.monotonic() - started:.0f} s")


# --------------------------------------------------------------------------------------------- base


def base_ref() -> str:
    key = _digest(SUITE.encode(), MIRROR.encode(), " ".join(BASE_PACKAGES).encode(), BASE_RECIPE.encode())
    return f"localhost/tradewarden-base:{SUITE}-{key}"


def build_base() -> str:
    ref = base_ref()
    if _image_exists(ref):
        say(f"reusing base image {ref}")
        return ref
    started = time.monotonic()
    say(f"debootstrap --variant=minbase {SUITE} with {', '.join(BASE_PACKAGES)} (first run only; about 2 minutes)")
    work = pathlib.Path(tempfile.mkdtemp(prefix="tw-rootfs-", dir=str(cache_root())))
    rootfs = work / "rootfs"
    try:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
                        str(rootfs), MIRROR], check=True, stdout=subprocess.DEVNULL)
        # Behave like python:3.11-slim: `python` and `pip` exist, and pip may install into the interpreter
        # (the PEP 668 marker is Debian's guard for a system it manages; an image is not one).
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        (rootfs / "usr/local/bin/pip").symlink_to("/usr/bin/pip3")
        # Nothing at run time needs the package lists, the apt caches or the documentation.
        for sub in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/locale"):
            shutil.rmtree(rootfs / sub, ignore_errors=True)
        (rootfs / "etc/resolv.conf").write_text("")
        container = buildah("from", "scratch", capture_output=True).stdout.strip()
        try:
            buildah("add", container, str(rootfs) + "/.", "/")
            buildah("config", "--env", "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin",
                    "--env", "LANG=C.UTF-8", "--cmd", "python3", container)
            buildah("commit", "--rm", container, ref, capture_output=True)
        except BaseException:
            buildah("rm", container, capture_output=True)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _timed(f"built base image {ref}", started)
    return ref


# --------------------------------------------------------------------------------------------- wheels


def wheel_dir() -> pathlib.Path:
    """Keyed by the lock file, the interpreter and the dependency lists of pyproject.toml."""
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    deps = " ".join([*project["project"]["dependencies"], *project["build-system"]["requires"]])
    key = _digest((REPO / "constraints.txt").read_bytes(), sys.version.encode(), deps.encode())
    return cache_root() / f"wheels-{key}"


def build_wheels() -> pathlib.Path:
    """Every pinned dependency of the package, as wheels for this CPython (the base's is the same 3.11)."""
    target = wheel_dir()
    if (target / ".complete").exists():
        say(f"reusing dependency wheels in {target}")
        return target
    started = time.monotonic()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    say("pip wheel of the pinned dependencies (once per constraints.txt)")
    # The project's dependencies and its build backend, read from pyproject.toml; the project itself is
    # built inside the image, from the build context (building it here would leave build/ in the tree).
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--constraint", str(REPO / "constraints.txt"),
                    "--wheel-dir", str(partial), *wanted], check=True)
    (partial / ".complete").write_text("")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    _timed("dependency wheels ready", started)
    return target


# --------------------------------------------------------------------------------------------- images


def context_files() -> list[pathlib.Path]:
    """The build context the Dockerfiles see (.dockerignore is an allow-list): what keys the image cache."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "pyproject.toml", "constraints.txt",
                          "README.md", "operator", "images"], cwd=REPO, capture_output=True, text=True, check=True)
    return sorted(REPO / line for line in out.stdout.splitlines() if (REPO / line).is_file())


def image_tag() -> str:
    parts = [str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() for p in context_files()]
    return f"{LOCAL_TAG}-{_digest(base_ref().encode(), *parts)}"


def archive_dir() -> pathlib.Path:
    return cache_root() / "archives"


def build_image(kind: str, base: str, wheels: pathlib.Path, tag: str) -> pathlib.Path:
    """Build ``images/<kind>/Dockerfile``; return a docker archive of it (cached by ``tag``)."""
    name = OPERATOR_IMAGE if kind == "operator" else RUNNER_IMAGE
    archive = archive_dir() / f"{kind}-{tag}.tar"
    if archive.exists():
        say(f"reusing {name}:{tag}")
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        # pip inside each RUN step: offline, from the cached wheels; only the project's own wheel is built.
        conf = pathlib.Path(tmp) / "pip.conf"
        conf.write_text("[global]\nno-index = true\nfind-links = /tradewarden-wheels\n")
        buildah("bud", "--quiet", "--pull-never", "--network", "host",
                "--volume", f"{wheels}:/tradewarden-wheels:ro", "--volume", f"{conf}:/etc/pip.conf:ro",
                "--build-arg", f"PYTHON_IMAGE={base}", "-f", str(REPO / "images" / kind / "Dockerfile"),
                "-t", f"{name}:{tag}", str(REPO), stdout=subprocess.DEVNULL)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    buildah("push", "--quiet", f"{name}:{tag}", f"docker-archive:{partial}:{name}:{tag}")
    partial.rename(archive)
    for old in archive_dir().glob(f"{kind}-*.tar"):
        if old != archive:
            old.unlink()
    _timed(f"built {name}:{tag} ({archive.stat().st_size / 2**20:.0f} MiB archive)", started)
    return archive


def build_pause() -> pathlib.Path:
    archive = archive_dir() / "pause-1.tar"
    if archive.exists():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, binary = pathlib.Path(tmp) / "pause.c", pathlib.Path(tmp) / "pause"
        src.write_text(PAUSE_C)
        subprocess.run(["gcc", "-Os", "-static", "-o", str(binary), str(src)], check=True)
        container = buildah("from", "scratch", capture_output=True).stdout.strip()
        buildah("copy", container, str(binary), "/pause", capture_output=True)
        buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container)
        buildah("commit", "--rm", container, PAUSE_IMAGE, capture_output=True)
    partial = archive.with_suffix(".partial")
    buildah("push", "--quiet", PAUSE_IMAGE, f"docker-archive:{partial}:{PAUSE_IMAGE}")
    partial.rename(archive)
    return archive


def build_all() -> dict[str, pathlib.Path]:
    """Every image the node needs: name:tag -> docker archive. One build at a time on this machine
    (two test sessions may ask at once); older builds of our two images are removed from the store."""
    import node  # the Debian packages (buildah, debootstrap) are the node's too

    node.ensure_packages()
    started = time.monotonic()
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = build_base()
        wheels = build_wheels()
        tag = image_tag()
        out = {PAUSE_IMAGE: build_pause()}
        for kind, name in (("operator", OPERATOR_IMAGE), ("runner", RUNNER_IMAGE)):
            out[f"{name}:{tag}"] = build_image(kind, base, wheels, tag)
        _prune(tag)
    _timed("images ready", started)
    return out


def _prune(keep: str) -> None:
    listed = buildah("images", "--format", "{{.Name}}:{{.Tag}}", capture_output=True).stdout.split()
    old = [ref for ref in listed if any(ref.startswith(f"localhost/{n}:{LOCAL_TAG}-") or ref.startswith(f"{n}:")
                                        for n in (OPERATOR_IMAGE, RUNNER_IMAGE)) and not ref.endswith(f":{keep}")]
    if old:
        buildah("rmi", "--force", *old, capture_output=True, check=False)
    buildah("rmi", "--prune", capture_output=True, check=False)  # the builder stages left untagged


def load(images: dict[str, pathlib.Path], containerd_socket: pathlib.Path) -> None:
    """Import each archive into the node's containerd (namespace k8s.io, where the kubelet looks)."""
    started = time.monotonic()
    for ref, archive in images.items():
        subprocess.run(["ctr", "--address", str(containerd_socket), "-n", "k8s.io", "images", "import",
                        str(archive)],
                       check=True, stdout=subprocess.DEVNULL)
        say(f"  loaded {ref}")
    _timed("images imported into the node", started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "load", "base", "tag"])
    parser.add_argument("--dir", default=os.environ.get("TRADEWARDEN_CLUSTER_DIR", str(REPO / ".cluster")),
                        help="state folder of the running local cluster, for load (default: .cluster)")
    args = parser.parse_args(argv)
    if args.command == "load":
        import localcluster

        state = localcluster.State.load(pathlib.Path(args.dir).resolve())
        if not (state and localcluster.healthy(state)):
            raise SystemExit(f"[images] no running local cluster in {args.dir}: start one with `make cluster-up` "
                             "(it loads the images itself)")
        print(localcluster.ensure_images(state))
    elif args.command == "base":
        print(build_base())
    elif args.command == "tag":
        print(image_tag())
    else:
        for ref, archive in build_all().items():
            print(f"{ref}\t{archive}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
