"""Triton Inference Server: the tritonserver binary inside the nvidia-pytriton wheel.

That build has the Python backend only; models run ONNX Runtime inside it. Three things make
it run from a venv (see DESIGN.md): a backend directory whose python/ folder links the backend
library, its utils module and the 3.11 stub; LD_LIBRARY_PATH with the wheel's libs and this
interpreter's libpython; PATH starting with the servers' venv, through which the stub finds
its site-packages.

Models load in explicit mode: every model of the repository at start, and later ones through
the repository API (`load_model`), so a new model or version needs no restart.
"""

from __future__ import annotations

import os
from pathlib import Path

from cbir.stack.errors import StackError
from cbir.stack.install import ensure_servers_venv, libpython_dir, site_packages
from cbir.stack.services.base import LocalService, Port, probe_http

METRICS_PORT = 8002
SHM_BYTES = 16 * 1024 * 1024


class TritonService(LocalService):
    name = "triton"
    start_hint = "a model in the repository that fails to load is named in the log"

    @property
    def ports(self) -> list[Port]:
        triton = self.settings.triton
        return [
            Port("http", triton.http_port, "CBIR_TRITON__HTTP_URL"),
            Port("grpc", triton.grpc_port, "CBIR_TRITON__GRPC_URL"),
            Port("metrics", self.internal_port(METRICS_PORT), "CBIR_STACK__INTERNAL_PORT_OFFSET"),
        ]

    @property
    def server_dir(self) -> Path:
        return site_packages(self.layout.servers_venv) / "pytriton" / "tritonserver"

    @property
    def backend_dir(self) -> Path:
        return self.layout.home / "triton" / "backends"

    def _backend_links(self) -> dict[Path, Path]:
        python = self.backend_dir / "python"
        return {
            python / "libtriton_python.so": self.server_dir / "backends/python/libtriton_python.so",
            python / "triton_python_backend_utils.py": self.server_dir
            / "backends/python/triton_python_backend_utils.py",
            python / "triton_python_backend_stub": self.server_dir
            / "python_backend_stubs/3.11/triton_python_backend_stub",
        }

    def is_installed(self) -> bool:
        return (self.server_dir / "bin" / "tritonserver").exists() and all(
            link.is_symlink() and link.resolve() == target.resolve()
            for link, target in self._backend_links().items()
        )

    def install(self) -> None:
        ensure_servers_venv(self.layout)
        for link, target in self._backend_links().items():
            if not target.exists():
                raise StackError(
                    self.name,
                    f"{target} is missing from nvidia-pytriton",
                    f"remove {self.layout.servers_venv} and run `cbir stack install`",
                )
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(target)

    def prepare(self) -> None:
        super().prepare()
        repository = self.settings.triton.model_repository
        if not repository.is_dir():
            raise StackError(
                self.name,
                f"the model repository {repository} does not exist",
                "create it or set CBIR_TRITON__MODEL_REPOSITORY to one",
            )

    def command(self) -> list[str]:
        http, grpc, metrics = (p.number for p in self.ports)
        return [
            str(self.server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.settings.triton.model_repository.resolve()}",
            f"--backend-directory={self.backend_dir}",
            f"--cache-directory={self.server_dir / 'caches'}",
            "--model-control-mode=explicit",
            "--load-model=*",
            "--exit-on-error=false",
            "--strict-readiness=false",
            "--http-address=127.0.0.1",
            f"--http-port={http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics}",
            f"--backend-config=python,shm-default-byte-size={SHM_BYTES}",
            "--log-verbose=0",
        ]

    def environment(self) -> dict[str, str]:
        venv_bin = str(self.layout.servers_venv / "bin")
        libs = [
            str(site_packages(self.layout.servers_venv) / "nvidia_pytriton.libs"),
            libpython_dir(),
            os.environ.get("LD_LIBRARY_PATH", ""),
        ]
        return {
            **os.environ,
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "LD_LIBRARY_PATH": ":".join(p for p in libs if p),
            "VIRTUAL_ENV": str(self.layout.servers_venv),
        }

    def probe(self) -> None:
        probe_http(f"http://{self.settings.triton.http_url}/v2/health/ready")
