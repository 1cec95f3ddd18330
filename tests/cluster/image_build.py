"""Building the cluster's images (:mod:`.images` says what each is) without a registry:
Debian rootfs tars with ``mmdebstrap``, images and their OCI archives with ``buildah``,
``pause`` compiled static with ``gcc``. :func:`ensure` builds what is missing or out of
date, under a lock on the cache, and prunes archives unused for a while.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.controlplane import build, versions
from tests.controlplane.build import Testbin

from . import postgres_image
from .images import REPO, Image, Images, aegis_key, cache_dir, content_key, locked_version
from .shell import ClusterError, run

Log = Callable[[str], None]
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")
BASE_SOURCES = (
    f"deb http://deb.debian.org/debian {BASE_SUITE} main",
    f"deb http://deb.debian.org/debian {BASE_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {BASE_SUITE}-security main",
)
_BASE_RECIPE = 1  # bump when the mmdebstrap command below changes
PAUSE_VERSION = "3.10.1"  # build/pause/Makefile's TAG in Kubernetes 1.34
_HEARTBEAT = 30.0
#: An older archive of an image is deleted only once unused for this long: another test
#: session (another checkout state) may be about to import it into its cluster.
PRUNE_AFTER_S = 2 * 3600


class Builder:
    """Builds missing archives; `log` gets one line per phase with its duration."""

    def __init__(self, log: Log, cache: Path | None = None) -> None:
        self.log = log
        self.cache = cache or cache_dir()
        self.storage = self.cache / "buildah"
        self.logs = self.cache / "logs"

    # -- helpers ------------------------------------------------------------------------
    def buildah(self, *args: str) -> list[str]:
        return [
            "buildah",
            f"--root={self.storage / 'root'}",
            f"--runroot={self.storage / 'run'}",
            "--storage-driver=overlay",
            *args,
        ]

    def _run_logged(self, argv: list[str], label: str, cwd: Path | None = None) -> None:
        log_path = self.logs / f"{label.split(maxsplit=1)[0]}.log"
        started = time.monotonic()
        with log_path.open("a") as out:
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
            while True:
                try:
                    code = proc.wait(timeout=_HEARTBEAT)
                    break
                except subprocess.TimeoutExpired:
                    self.log(f"  ... {label}: {int(time.monotonic() - started)}s")
        if code != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise ClusterError(f"{label} failed (exit {code}), log {log_path}:\n{tail}")

    def _has_image(self, name: str) -> bool:
        return run(self.buildah("inspect", "--type=image", name), check=False).returncode == 0

    def _export(self, local: str, image: Image) -> None:
        """Write `local` (in buildah's storage) as the OCI archive of `image`."""
        partial = image.archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        run(self.buildah("push", local, f"oci-archive:{partial}:{image.ref}"), timeout=600)
        os.replace(partial, image.archive)
        run(self.buildah("rmi", local), check=False)

    def _prune(self, prefix: str, keep: Path) -> None:
        """Delete the other archives of `prefix` not used (built or handed out) lately."""
        now = time.time()
        for old in self.cache.glob(f"{prefix}-*.tar"):
            try:
                idle = now - old.stat().st_mtime
            except OSError:
                continue
            if old != keep and idle > PRUNE_AFTER_S:
                old.unlink(missing_ok=True)

    def _timed(self, what: str, started: float) -> None:
        self.log(f"{what} in {time.monotonic() - started:.0f}s")

    @contextmanager
    def _committed(self, source: str, name: str) -> Iterator[str]:
        """A working container from `source` (an image in the storage, or ``scratch``),
        committed as the image `name` when the block ends; removed if the block fails."""
        pull = [] if source == "scratch" else ["--pull=never"]
        container = run(self.buildah("from", *pull, source)).stdout.strip()
        try:
            yield container
            run(self.buildah("commit", "--rm", container, name), timeout=600)
        except BaseException:
            run(self.buildah("rm", container), check=False)
            raise

    # -- base ---------------------------------------------------------------------------
    def base(self) -> str:
        """The base image's name in buildah's storage (built or imported when missing)."""
        key = content_key([str(_BASE_RECIPE), BASE_SUITE, *BASE_PACKAGES, *BASE_SOURCES])
        name = f"localhost/aegis-python-base:{key}"
        if self._has_image(name):
            return name
        rootfs = self.cache / f"base-{key}.tar"
        if not rootfs.exists():
            started = time.monotonic()
            self.log(f"base: mmdebstrap {BASE_SUITE} {' '.join(BASE_PACKAGES)}")
            partial = rootfs.with_suffix(".partial")
            self._mmdebstrap(partial, BASE_PACKAGES, "mmdebstrap base")
            os.replace(partial, rootfs)
            self._prune("base", rootfs)
            self._timed("base: rootfs made", started)
        started = time.monotonic()
        with self._committed("scratch", name) as container:
            run(self.buildah("add", container, str(rootfs), "/"), timeout=600)
            run(self.buildah("config", f"--env=PATH={_PATH}", "--cmd=/bin/bash", container))
        self._timed(f"base: image {name} imported", started)
        return name

    def _mmdebstrap(self, target: Path, packages: Iterable[str], label: str, *hooks: str) -> None:
        """A Debian rootfs tar of `packages` (minbase, no documentation)."""
        self._run_logged(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                "--format=tar",
                f"--include={','.join(packages)}",
                '--aptopt=Acquire::Check-Valid-Until "false"',
                *(
                    f"--dpkgopt=path-exclude=/usr/share/{d}/*"
                    for d in ("doc", "man", "locale", "info")
                ),
                *hooks,
                BASE_SUITE,
                str(target),
                *BASE_SOURCES,
            ],
            label,
        )

    # -- images -------------------------------------------------------------------------
    def aegis(self, repo: Path = REPO) -> Image:
        base_key = self.base_key()
        key = aegis_key(base_key, repo)
        image = Image(f"docker.io/local/aegis:{key}", self.cache / f"aegis-{key}.tar")
        if image.archive.exists():
            return image
        base = self.base()
        started = time.monotonic()
        local = f"localhost/aegis:{key}"
        self.log(f"aegis: buildah bud {repo / 'Dockerfile'} FROM {base}")
        self._run_logged(
            self.buildah(
                "bud",
                "--isolation=chroot",
                "--network=host",
                "--pull-never",
                "--layers=false",
                f"--build-arg=PYTHON_IMAGE={base}",
                *_pip_passthrough(),
                f"--tag={local}",
                f"--file={repo / 'Dockerfile'}",
                str(repo),
            ),
            "buildah bud aegis",
        )
        self._export(local, image)
        run(self.buildah("rmi", "--prune"), check=False)  # the build stage
        self._prune("aegis", image.archive)
        self._timed(f"aegis: image {image.short}", started)
        return image

    def base_key(self) -> str:
        return content_key([str(_BASE_RECIPE), BASE_SUITE, *BASE_PACKAGES, *BASE_SOURCES])

    def client(self, repo: Path = REPO) -> Image:
        """An application image: the base, and the openai SDK in /opt/app (on PATH)."""
        version = locked_version(repo / "uv.lock", "openai")
        key = content_key([self.base_key(), f"openai=={version}", *_CLIENT_RUN])
        image = Image(f"docker.io/local/aegis-client:{key}", self.cache / f"client-{key}.tar")
        if image.archive.exists():
            return image
        base = self.base()
        started = time.monotonic()
        self.log(f"client: openai=={version} on {base}")
        local = f"localhost/aegis-client:{key}"
        with self._committed(base, local) as container:
            script = " && ".join(_CLIENT_RUN).format(requirement=f"openai=={version}")
            self._run_logged(
                self.buildah(
                    "run",
                    "--isolation=chroot",
                    "--network=host",
                    *_pip_passthrough(for_run=True),
                    container,
                    "--",
                    "sh",
                    "-c",
                    script,
                ),
                "pip client",
            )
            run(
                self.buildah(
                    "config",
                    f"--env=PATH=/opt/app/bin:{_PATH}",
                    "--env=PYTHONDONTWRITEBYTECODE=1",
                    "--user=65532:65532",
                    container,
                )
            )
        self._export(local, image)
        self._prune("client", image.archive)
        self._timed(f"client: image {image.short}", started)
        return image

    def postgres(self) -> Image:
        """Debian's PostgreSQL with the official image's entrypoint contract."""
        pg = postgres_image
        hooks = [f"--essential-hook={h}" for h in pg.ESSENTIAL_HOOKS]
        hooks += [f"--customize-hook={h}" for h in pg.CUSTOMIZE_HOOKS]
        key = content_key(
            [str(pg.RECIPE), BASE_SUITE, *BASE_SOURCES, *pg.PACKAGES, *hooks, pg.ENTRYPOINT]
        )
        image = Image(
            f"docker.io/local/postgres:{pg.PG_MAJOR}-{key}", self.cache / f"postgres-{key}.tar"
        )
        if image.archive.exists():
            return image
        started = time.monotonic()
        self.log(f"postgres: mmdebstrap {BASE_SUITE} {' '.join(pg.PACKAGES)}")
        with tempfile.TemporaryDirectory() as tmp:
            rootfs, entrypoint = Path(tmp) / "rootfs.tar", Path(tmp) / "entrypoint.sh"
            self._mmdebstrap(rootfs, pg.PACKAGES, "mmdebstrap postgres", *hooks)
            entrypoint.write_text(pg.ENTRYPOINT)
            local = f"localhost/{image.short.split('/', 1)[1]}"
            with self._committed("scratch", local) as container:
                run(self.buildah("add", container, str(rootfs), "/"), timeout=600)
                run(
                    self.buildah(
                        "copy", "--chmod=0755", container, str(entrypoint), pg.ENTRYPOINT_PATH
                    )
                )
                run(
                    self.buildah(
                        "config",
                        f"--env=PATH={pg.PATH}",
                        "--env=LANG=C.UTF-8",
                        "--env=PGDATA=/var/lib/postgresql/data",
                        f"--entrypoint={json.dumps([pg.ENTRYPOINT_PATH])}",
                        '--cmd=["postgres"]',
                        "--user=999:999",
                        "--port=5432",
                        "--stop-signal=SIGINT",
                        container,
                    )
                )
        self._export(local, image)
        self._prune("postgres", image.archive)
        self._timed(f"postgres: image {image.short}", started)
        return image

    def _scratch(
        self, image: Image, files: dict[str, Path], entrypoint: list[str], user: str
    ) -> None:
        """An image from scratch holding `files` (image path -> host file)."""
        started = time.monotonic()
        local = f"localhost/{image.short.split('/', 1)[1]}"
        with self._committed("scratch", local) as container:
            for target, source in files.items():
                run(self.buildah("copy", "--chmod=0755", container, str(source), target))
            run(
                self.buildah(
                    "config", f"--entrypoint={json.dumps(entrypoint)}", f"--user={user}", container
                )
            )
        self._export(local, image)
        self._timed(f"{image.repository}: image {image.short}", started)

    def pause(self) -> Image:
        source = (
            build.module_dir("k8s.io/kubernetes", versions.KUBERNETES) / "build/pause/linux/pause.c"
        )
        key = content_key([source.read_bytes(), PAUSE_VERSION, "gcc -Os -static"])
        image = Image(
            f"docker.io/local/pause:{PAUSE_VERSION}-{key}", self.cache / f"pause-{key}.tar"
        )
        if image.archive.exists():
            return image
        with tempfile.TemporaryDirectory() as tmp:
            binary = Path(tmp) / "pause"
            run(
                [
                    "gcc",
                    "-Os",
                    "-Wall",
                    "-Werror",
                    "-static",
                    f"-DVERSION=v{PAUSE_VERSION}-aegis",
                    "-o",
                    str(binary),
                    str(source),
                ]
            )
            run(["strip", str(binary)])
            self._scratch(image, {"/pause": binary}, ["/pause"], "65535:65535")
        self._prune("pause", image.archive)
        return image

    def coredns(self, testbin: Testbin) -> Image:
        binary = testbin.binary("coredns")
        key = content_key([binary.read_bytes()])
        version = versions.COREDNS.lstrip("v")
        image = Image(f"docker.io/local/coredns:{version}-{key}", self.cache / f"coredns-{key}.tar")
        if not image.archive.exists():
            self._scratch(image, {"/coredns": binary}, ["/coredns"], "65532:65532")
            self._prune("coredns", image.archive)
        return image


_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CLIENT_RUN = (
    "python3 -m venv /opt/app",
    "/opt/app/bin/pip install --no-cache-dir --no-warn-script-location {requirement}",
    "/opt/app/bin/python -c 'import openai'",
)


def _pip_passthrough(for_run: bool = False) -> list[str]:
    """Lend the host's pip index and CA bundle to the build (not kept in the image):
    as build arguments of `buildah bud`, or as the environment of `buildah run`."""
    args = []
    kind = "--env" if for_run else "--build-arg"
    index = os.environ.get("PIP_INDEX_URL")
    if index:
        args.append(f"{kind}=PIP_INDEX_URL={index}")
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            target = "/run/aegis-build/ca.crt"
            args += [f"--volume={candidate}:{target}:ro", f"{kind}=PIP_CERT={target}"]
            break
    return args


def missing_tools() -> list[str]:
    return [tool for tool in ("buildah", "mmdebstrap", "gcc", "strip") if not shutil.which(tool)]


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure(testbin: Testbin, log: Log, repo: Path = REPO) -> Images:
    """Every image's archive, building what is missing or out of date."""
    missing = missing_tools()
    if missing:
        raise ClusterError(
            f"missing {', '.join(missing)}: run `make cluster-deps` (Debian packages)"
        )
    builder = Builder(log)
    with _locked(builder.cache):
        builder.logs.mkdir(parents=True, exist_ok=True)
        images = Images(
            aegis=builder.aegis(repo),
            pause=builder.pause(),
            coredns=builder.coredns(testbin),
            postgres=builder.postgres(),
            client=builder.client(repo),
        )
        for image in images.all():
            os.utime(image.archive)  # in use: not pruned by another session's build
        return images
