"""A livecart node in a child process (`python -m livecart serve`), for tests, benchmarks and
tools: started on a free port, ready once it prints its ready line, its output kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

READY = "livecart ready on "


class NodeProcess:
    def __init__(
        self,
        data_dir: str,
        *,
        database_url: str = "",
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.env = env or {}
        self.extra_args = extra_args or []
        self.host = host
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    # The line the child prints once it serves; its last word is its URL.
    ready_line = READY

    def command(self, port: int) -> tuple[list[str], dict[str, str]]:
        """The child's arguments and environment."""
        env = {**os.environ, **self.env}
        args = [sys.executable, "-m", "livecart", "serve", "--host", self.host]
        args += ["--port", str(port), "--data-dir", self.data_dir, *self.extra_args]
        if self.database_url:
            args += ["--database-url", self.database_url]
        else:  # the embedded default
            env.pop("DATABASE_URL", None)
        return args, env

    def start(self, port: int = 0, timeout: float = 60) -> NodeProcess:
        """Start and wait for the ready line; RuntimeError with the output if none comes."""
        args, env = self.command(port)
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith(self.ready_line):
                self.url = line.split()[-1]
                # Keep reading so the child never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.kill()
        raise RuntimeError("the process did not become ready:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20) -> None:
        """Terminate if running; kill when it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.terminate(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
