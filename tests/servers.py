"""Real tracking/orchestration servers for tests: started on 127.0.0.1 with a free port, always stopped after."""

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

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def _server(cmd: list[str], health_url: str, log: Path, env: dict[str, str], timeout: float) -> Iterator[None]:
    with open(log, "w") as out:
        # own process group: the servers start workers, and stopping must take them all down
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(health_url, proc, log, timeout)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def mlflow_server(root: Path, timeout: float = 60) -> Iterator[str]:
    """`mlflow server` with a sqlite store and local artifacts under `root`; yields its http URI."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
    ]
    uri = f"http://127.0.0.1:{port}"
    with _server(cmd, f"{uri}/health", root / "mlflow-server.log", dict(os.environ), timeout):
        yield uri


@contextmanager
def prefect_server(root: Path, timeout: float = 90) -> Iterator[str]:
    """`prefect server start` with its own PREFECT_HOME under `root`; yields its API URL."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    with _server(cmd, f"{api}/health", root / "prefect-server.log", env, timeout):
        yield api
