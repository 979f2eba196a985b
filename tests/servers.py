"""Real servers for tests: started on 127.0.0.1 on a free port, waited for until healthy, always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and everything it spawned (uvicorn workers): its own process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Server:
    """A running server: `uri` to give clients, `stop()` to stop it early (e.g. mid-run in a test)."""

    def __init__(self, uri: str, proc: subprocess.Popen) -> None:
        self.uri, self.proc = uri, proc

    def stop(self) -> None:
        stop(self.proc)


@contextmanager
def _running(
    cmd: list[str], uri: str, health: str, log_file: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Start `cmd` in its own process group, wait for `health` to answer 200, yield a Server, always stop it."""
    log = open(log_file, "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=log_file.parent, env=env
    )
    try:
        wait_healthy(health, proc)
        yield Server(uri, proc)
    finally:
        stop(proc)
        log.close()


@contextmanager
def mlflow_server(tmp_path: Path) -> Iterator[Server]:
    """`mlflow server` on 127.0.0.1:<free port> with a sqlite store and artifacts under `tmp_path`.

    Yields a Server (`.uri`, `.stop()`); the server is stopped on exit in every case.
    """
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"),
    ]
    uri = f"http://127.0.0.1:{port}"
    with _running(cmd, uri, f"{uri}/health", tmp_path / "mlflow-server.log") as server:
        yield server


@contextmanager
def prefect_server(tmp_path: Path) -> Iterator[Server]:
    """`prefect server start` on 127.0.0.1:<free port> with its own PREFECT_HOME under `tmp_path`.

    Yields a Server whose `.uri` is the API URL (`http://127.0.0.1:<port>/api`); stopped on exit in every case.
    """
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no telemetry (and no network here)
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    with _running(cmd, api, f"{api}/health", tmp_path / "prefect-server.log", env) as server:
        yield server
