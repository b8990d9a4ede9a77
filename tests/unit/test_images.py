"""The container images, checked without Docker (none runs on these machines): the Dockerfiles' structure
and the kind end-to-end script's syntax and fail-fast behaviour.

The images are built and run for real by ``make e2e-kind`` (tests/e2e/kind.sh) where Docker exists.
Here each Dockerfile is parsed and held to what the chart and the operator assume of it: multi-stage,
a pinned base, the package installed from the repository's own wheel with the pinned constraints,
non-root uid 10001, ``tradewarden`` as the entry point, the ports and journal path the operator uses, and
every COPY source present in the repository and admitted by .dockerignore.
"""

from __future__ import annotations

import fnmatch
import os
import pathlib
import re
import shlex
import subprocess
from dataclasses import dataclass, field

import pytest

from support.kube import REPO
from tradewarden.controller.builders import JOURNAL_PATH, RUNNER_PORT, RUNNER_UID

IMAGES = {"operator": REPO / "images" / "operator" / "Dockerfile", "runner": REPO / "images" / "runner" / "Dockerfile"}
KIND_SH = REPO / "tests" / "e2e" / "kind.sh"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: pathlib.Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), words[0])
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base, name))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def _pattern_matches(pattern: str, parts: tuple[str, ...]) -> bool:
    """A .dockerignore pattern against a path or any of its parents; `*` never crosses a `/`."""
    if pattern.startswith("**/"):
        return any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
    globs = pattern.strip("/").split("/")
    return len(parts) >= len(globs) and all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globs, strict=False))


def dockerignore_admits(rel: str) -> bool:
    """Docker's rule: patterns apply in order, the last one matching the path (or a parent) wins."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.strip().startswith("#")]
    parts = pathlib.PurePosixPath(rel.rstrip("/")).parts
    included = True
    for pattern in patterns:
        if _pattern_matches(pattern.lstrip("!"), parts):
            included = pattern.startswith("!")
    return included


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_is_multistage_pinned_and_non_root(image: str) -> None:
    path = IMAGES[image]
    assert path.read_text().startswith("# syntax=docker/dockerfile:1\n# The "), "opens with a comment on its role"
    _, stages = parse(path)
    assert len(stages) >= 2, "multi-stage: a builder and a runtime"
    assert stages[0].name == "builder"
    for stage in stages:
        repo, _, tag = stage.base.partition("@")[0].rpartition(":")
        assert repo == "python", stage.base
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), f"{image}: base not pinned to a full tag: {stage.base}"
        assert tag != "latest"
    final = stages[-1]
    users = final.all("USER")
    assert users, f"{image}: the final stage never drops root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid, so runAsNonRoot can verify it"
    assert int(uid) == RUNNER_UID == 10001
    assert final.all("ENTRYPOINT") == ['["tradewarden"]']
    assert not any(stage.all("ADD") for stage in stages), "COPY only, never ADD"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_package_comes_from_the_repository_wheel_with_pinned_constraints(image: str) -> None:
    _, stages = parse(IMAGES[image])
    builder, final = stages[0], stages[-1]
    builder_runs = " ".join(builder.all("RUN"))
    assert "pip wheel" in builder_runs
    assert "--constraint constraints.txt" in builder_runs
    final_runs = " ".join(final.all("RUN"))
    assert "pip install --no-index --find-links /wheels" in final_runs, "offline, from the builder's wheels only"
    assert "from=builder" in final_runs
    assert not re.search(r"\b(curl|wget)\b", builder_runs + final_runs), "nothing fetched outside pip"
    # The runtime stage carries no source tree: whatever it copies comes from the builder stage.
    for copy in final.all("COPY"):
        assert copy.startswith("--from=builder"), copy


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_every_copy_source_exists_and_enters_the_build_context(image: str) -> None:
    _, stages = parse(IMAGES[image])
    sources: list[str] = []
    for stage in stages:
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(copy)):
                continue
            sources.extend(words[:-1])
    assert sources, "the builder copies the repository"
    for source in sources:
        assert (REPO / source).exists(), f"{image}: COPY {source}: not in the repository"
        assert dockerignore_admits(source), f"{image}: COPY {source}: excluded by .dockerignore"
    # pyproject.toml names its readme; the wheel build needs it in the context.
    assert "README.md" in sources
    for private in (".venv", ".cluster", ".git", "tests", "charts"):
        assert not dockerignore_admits(private), f".dockerignore lets {private} into the build context"


def test_images_expose_what_the_chart_and_the_operator_expect() -> None:
    _, operator = parse(IMAGES["operator"])
    _, runner = parse(IMAGES["runner"])
    assert operator[-1].all("EXPOSE") == ["8080"]  # the chart's operator.metricsPort default
    assert operator[-1].all("CMD") == ['["operator"]']
    assert runner[-1].all("EXPOSE") == [str(RUNNER_PORT)]
    env = " ".join(runner[-1].all("ENV"))
    assert f"TRADEWARDEN_JOURNAL={JOURNAL_PATH}" in env
    assert runner[-1].all("VOLUME") == [f'["{JOURNAL_PATH}"]']
    assert any(f"-o {RUNNER_UID} -g {RUNNER_UID}" in run and JOURNAL_PATH in run for run in runner[-1].all("RUN"))
    for stages in (operator, runner):
        assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(stages[-1].all("ENV")), "read-only root filesystem"


# ------------------------------------------------------------------------------------------- kind.sh


def test_kind_script_parses() -> None:
    proc = subprocess.run(["bash", "-n", str(KIND_SH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(KIND_SH, os.X_OK)


def _fake_bin(tmp_path: pathlib.Path, tools: dict[str, str]) -> dict[str, str]:
    """A PATH with only `dirname` and the given fake tools (name -> shell body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dirname = subprocess.run(["bash", "-c", "command -v dirname"], capture_output=True, text=True).stdout.strip()
    (bin_dir / "dirname").symlink_to(dirname)
    for name, body in tools.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}


@pytest.mark.parametrize(("tools", "message"), [
    ({}, "docker is not installed"),
    ({"docker": "exit 1"}, "no Docker engine answers"),
    ({"docker": "exit 0"}, "kind is not installed"),
])
def test_kind_script_fails_fast_naming_what_is_missing(tmp_path: pathlib.Path, tools: dict[str, str],
                                                       message: str) -> None:
    bash = subprocess.run(["bash", "-c", "command -v bash"], capture_output=True, text=True).stdout.strip()
    proc = subprocess.run([bash, str(KIND_SH)], capture_output=True, text=True, env=_fake_bin(tmp_path, tools),
                          timeout=30)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_dockerignore_reading_follows_dockers_rules() -> None:
    assert dockerignore_admits("operator/tradewarden/cli.py")
    assert not dockerignore_admits("operator/tradewarden/__pycache__/cli.cpython-311.pyc")
    assert not dockerignore_admits(".cluster/pki/ca.key")
    assert not dockerignore_admits("tests/conftest.py")
