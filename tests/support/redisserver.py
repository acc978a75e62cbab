"""Run Debian's `redis-server` on loopback for the shared-cache tests: a random free port, its
own directory, no persistence."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support import binaries, procs
from tests.support.registry import free_port

BINARY = "/usr/bin/redis-server"
MISSING = "redis-server not installed: apt-get install redis-server; these tests are required in CI"


def redis_binary() -> str | None:
    """Path of redis-server, or None when it is not installed."""
    return binaries.find(BINARY, "redis-server")


def require_redis() -> str:
    """The redis-server binary; skip loudly when missing (fail when CI=true)."""
    return binaries.require(BINARY, "redis-server", MISSING)


@dataclass
class RunningRedis:
    """A redis-server process on 127.0.0.1:`port` (kept across `kill()` and `start()`)."""

    binary: str
    directory: Path
    port: int
    password: str | None = None
    tls: tuple[Path, Path, Path] | None = None
    """(certificate, key, CA): serve TLS only (`rediss://`), clients not asked for one."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers PING (10 s)."""
        ports = ["--port", str(self.port)]
        if self.tls is not None:
            cert, key, ca = self.tls
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert)]
            ports += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)]
            ports += ["--tls-auth-clients", "no"]
        args = [
            self.binary,
            *ports,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        end = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early:\n{self.log()}")
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.02)

    def client(self) -> redis.Redis:
        """A plain client for the test's own looks and writes."""
        tls: dict[str, object] = {}
        if self.tls is not None:
            tls = {"ssl": True, "ssl_ca_certs": str(self.tls[2])}
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5, **tls
        )

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: Redis gone at once, as when its node dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.process is not None:
            procs.stop(self.process)


def start_redis(
    directory: Path, *, password: str | None = None, tls: tuple[Path, Path, Path] | None = None
) -> RunningRedis:
    """A fresh redis-server in `directory` on a free loopback port (TLS only with `tls`)."""
    binary = require_redis()
    directory.mkdir(parents=True, exist_ok=True)
    running = RunningRedis(binary, directory, free_port(), password, tls)
    running.start()
    return running
