"""Install steps shared by the services: tools, Debian packages, the servers' venv.

Every step is idempotent and leaves a marker that records what it installed, so a second
`cbir stack install` with everything present only checks markers.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from cbir.stack.errors import StackError
from cbir.stack.layout import StackLayout


def resource_text(name: str) -> str:
    return resources.files("cbir.stack").joinpath("resources", name).read_text()


def require_tool(service: str, tool: str, fix: str) -> str:
    """The path of a command-line tool, or a StackError that says how to get it."""
    path = shutil.which(tool) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / tool).exists()), None
    )
    if path is None:
        raise StackError(service, f"the tool `{tool}` is not installed", fix)
    return path


def run_checked(
    service: str,
    command: Sequence[str],
    what: str,
    fix: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run an install command; on failure raise a StackError carrying its last output."""
    result = subprocess.run(
        list(command), capture_output=True, text=True, env=dict(env) if env else None, cwd=cwd
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise StackError(
            service, f"{what} failed (exit {result.returncode})", fix, "\n".join(output[-20:])
        )
    return result.stdout


def marker_matches(marker: Path, content: str) -> bool:
    return marker.exists() and marker.read_text() == content


_APT = threading.Lock()
APT_LOCK_WAIT_S = 600


def apt_install(service: str, packages: Sequence[str], binaries: Sequence[str]) -> None:
    """Install Debian packages unless the binaries they provide are already there."""
    missing = [b for b in binaries if not (shutil.which(b) or Path("/usr/sbin", b).exists())]
    if not missing:
        return
    names = ", ".join(f"`{b}`" for b in missing)
    manual = f"sudo apt-get update && sudo apt-get install -y {' '.join(packages)}"
    apt = shutil.which("apt-get")
    if apt is None:
        raise StackError(
            service,
            f"{names} not installed, and there is no apt-get here",
            f"install {', '.join(packages)} with your package manager "
            f"(Debian: apt-get install {' '.join(packages)})",
        )
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise StackError(service, f"{names} not installed; installing needs root", manual)
        prefix = [sudo, "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # dpkg takes one installer at a time: the launcher installs services in parallel threads
    # (one lock here), and another apt process may hold dpkg's own lock (wait for it)
    wait = ["-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT_S}"]
    install = [*prefix, apt, *wait, "install", "-y", "-q", "--no-install-recommends", *packages]
    with _APT:
        try:
            run_checked(service, install, "apt-get install", manual, env=env)
        except StackError:
            update = [*prefix, apt, *wait, "update", "-q"]
            run_checked(service, update, "apt-get update", manual, env=env)
            run_checked(service, install, "apt-get install", manual, env=env)


def base_python() -> Path:
    """The interpreter behind this venv; Triton's Python stub needs its shared libpython."""
    executable = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise StackError(
            "triton",
            f"{executable} was built without a shared libpython, which Triton's Python "
            "backend stub loads",
            "use a Python 3.11 built with --enable-shared (Debian's python3.11, or pyenv with "
            "PYTHON_CONFIGURE_OPTS=--enable-shared) for the project's venv",
        )
    return executable


def libpython_dir() -> str:
    return str(sysconfig.get_config_var("LIBDIR"))


def ensure_servers_venv(layout: StackLayout) -> Path:
    """The venv holding the Milvus and Triton servers, with pinned requirements."""
    requirements = resource_text("servers-requirements.txt")
    digest = hashlib.sha256(requirements.encode()).hexdigest()
    venv = layout.servers_venv
    marker = venv / ".cbir-requirements.sha256"
    if marker_matches(marker, digest):
        return venv
    with install_lock(layout, "servers-venv"):
        if not marker_matches(marker, digest):
            _install_servers_venv(venv, requirements)
            marker.write_text(digest)
    return venv


@contextmanager
def install_lock(layout: StackLayout, name: str) -> Iterator[None]:
    """Serialise an install step across threads and processes."""
    layout.home.mkdir(parents=True, exist_ok=True)
    with (layout.home / f".{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install_servers_venv(venv: Path, requirements: str) -> None:
    fix = "check that PyPI is reachable, then run `cbir stack install` again"
    if not (venv / "bin" / "python").exists():
        run_checked(
            "servers-venv",
            [str(base_python()), "-m", "venv", str(venv)],
            "creating the servers' venv",
            fix,
        )
    req_file = venv / "requirements.txt"
    req_file.write_text(requirements)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    run_checked("servers-venv", [*pip, "-r", str(req_file)], "pip install of the servers", fix)


def site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"
