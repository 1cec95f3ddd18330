"""The cluster's images, built without a registry: base, Aegis, pause and CoreDNS.

This module says what each image is (:class:`Image`, :class:`Images`), where its
archive lives and the key of its inputs; :mod:`.image_build` builds the missing ones
(:func:`.image_build.ensure`).

* **base**: Debian bookworm's ``python3`` (+ venv, CA certificates, passwd) made with
  ``mmdebstrap`` into a tar, then turned into the image
  ``localhost/aegis-python-base:<key>`` with buildah.
* **aegis**: the repository's ``Dockerfile``, ``buildah bud --isolation chroot`` with
  ``--build-arg PYTHON_IMAGE=<base>`` (host network for pip; the host's CA bundle is
  lent to pip for machines behind a TLS-inspecting proxy).
* **pause**: ``pause.c`` from the ``k8s.io/kubernetes`` module, compiled static.
* **coredns**: the binary from :mod:`tests.controlplane.build`.
* **client**: the base with a venv holding the official ``openai`` SDK (the version
  ``uv.lock`` pins): the application container of the end-to-end tests.
* **postgres**: Debian's PostgreSQL made with ``mmdebstrap`` like the base, with an
  entrypoint that keeps the official ``postgres`` image's contract
  (:mod:`.postgres_image`): the chart's evaluation ledger database.

Each image ends up as an OCI archive ``<cache>/<name>-<key>.tar`` whose reference is
fully qualified (``docker.io/local/<name>:<key>``, what the kubelet asks containerd for
when a pod says ``local/<name>:<key>``); the key hashes the image's inputs, so an
archive is rebuilt only when they change. Cache: ``$AEGIS_IMAGE_CACHE`` or
``~/.cache/aegis/images``, with buildah's own storage under it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .shell import ClusterError

REPO = Path(__file__).resolve().parents[2]
#: Inputs of the Aegis image: what the Dockerfile copies, and the Dockerfile itself.
AEGIS_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "uv.lock",
    "README.md",
    "operator",
    "sidecar",
)


@dataclass(frozen=True)
class Image:
    """An OCI archive whose image is named `ref` (``docker.io/local/<name>:<tag>``)."""

    ref: str
    archive: Path

    @property
    def short(self) -> str:
        """What a pod spec says: ``local/<name>:<tag>``."""
        return self.ref.removeprefix("docker.io/")

    @property
    def repository(self) -> str:
        return self.short.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


@dataclass(frozen=True)
class Images:
    aegis: Image
    pause: Image
    coredns: Image
    postgres: Image
    client: Image

    def all(self) -> list[Image]:
        return [self.pause, self.coredns, self.aegis, self.postgres, self.client]


def cache_dir() -> Path:
    configured = os.environ.get("AEGIS_IMAGE_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "aegis" / "images"


def content_key(parts: Iterable[bytes | str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:12]


def _tree_files(root: Path, names: Iterable[str]) -> Iterator[Path]:
    """The files of `names` (files or directories) that a build would copy, sorted."""
    for name in names:
        path = root / name
        if path.is_file():
            yield path
            continue
        for file in sorted(path.rglob("*")):
            if (
                file.is_file()
                and "__pycache__" not in file.parts
                and file.suffix not in (".pyc", ".db")
            ):
                yield file


def aegis_key(base_key: str, repo: Path = REPO) -> str:
    parts: list[bytes | str] = [base_key]
    for file in _tree_files(repo, AEGIS_INPUTS):
        parts += [str(file.relative_to(repo)), file.read_bytes()]
    return content_key(parts)


def locked_version(lock: Path, package: str) -> str:
    """The version `uv.lock` pins for `package`."""
    lines = lock.read_text().splitlines()
    for at, line in enumerate(lines):
        if line == f'name = "{package}"' and lines[at + 1].startswith("version = "):
            return lines[at + 1].split('"')[1]
    raise ClusterError(f"{lock} pins no {package}")
