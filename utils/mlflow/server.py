"""A quiet local MLflow tracking server (`mlflow ui` or `mlflow server`): started in its own process group, waited
for until it answers, and stopped with every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

QUIET_ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # no INFO lines of creating or updating the database tables
    "PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated",  # a UserWarning subclass: by message
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no GenAI job runners: 7 fewer processes, twice as fast to start
}
UVICORN_OPTIONS = "--log-level warning --no-access-log"
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (another program listens there), else None."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: closed connections pass
        try:
            probe.bind((host, port))
        except OSError as error:
            return f"{host}:{port} cannot be used ({error.strerror}): another program (a dashboard?) listens there"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class MlflowServer:
    """A running server: its process (leader of its own process group) and its URL."""

    process: subprocess.Popen
    url: str

    def stop(self) -> None:
        """SIGTERM to the server's process group (uvicorn runs as a child), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:  # the group ended meanwhile
            self.process.wait()


def server_command(backend_uri: str, host: str, port: int, command: str = "ui",
                   artifacts_destination: str | Path | None = None) -> list[str]:
    """The command line of a quiet `mlflow ui|server` on one worker process."""
    args = [sys.executable, "-m", "mlflow", command, "--backend-store-uri", backend_uri,
            "--registry-store-uri", backend_uri, "--host", host, "--port", str(port), "--workers", "1",
            "--uvicorn-opts", UVICORN_OPTIONS]
    return args + (["--artifacts-destination", str(artifacts_destination)] if artifacts_destination else [])


def start_server(backend_uri: str, port: int, host: str = "127.0.0.1", command: str = "ui",
                 artifacts_destination: str | Path | None = None, output: IO[str] | None = None) -> MlflowServer:
    """Start the server and return once it answers /health; RuntimeError (with its output, when in a file) if it
    exits or stays silent for START_TIMEOUT_S."""
    process = subprocess.Popen(server_command(backend_uri, host, port, command, artifacts_destination),
                               stdout=output, stderr=subprocess.STDOUT if output else None,
                               env={**os.environ, **QUIET_ENV}, start_new_session=True)
    server = MlflowServer(process, f"http://{host}:{port}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow {command} on {server.url} exited with code {process.returncode} before "
                               f"answering{_tail(output)}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"mlflow {command} on {server.url} did not answer in {START_TIMEOUT_S} s{_tail(output)}")


def _tail(output: IO[str] | None) -> str:
    name = getattr(output, "name", None)
    if not isinstance(name, str) or not Path(name).is_file():
        return ""
    output.flush()
    return ":\n" + Path(name).read_text(encoding="utf-8", errors="replace")[-3000:]
