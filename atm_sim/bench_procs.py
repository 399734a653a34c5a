"""The bench's processes: servers and load workers started as children,
their CPU from /proc, a port to give them, and waiting for them to listen.

Every wait is bounded (``BOUND``); every child's output goes to a file of
the row's work directory, kept for reading after the run.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

BOUND = 60.0  # seconds: any single wait of the bench (start-up, drain)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Child(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()

    def processEnded(self, reason):
        self.ended.callback(None)


class Child:
    """A server process, its output in files of the work directory."""

    def __init__(self, reactor, argv: list[str], workdir: Path, name: str, env: dict | None = None):
        self.proto = _Child()
        out = os.open(workdir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            self.transport = reactor.spawnProcess(self.proto, argv[0], argv, env=env or dict(os.environ),
                                                  path=str(workdir), childFDs={0: "w", 1: out, 2: out})
        finally:
            os.close(out)
        self.pid = self.transport.pid

    async def stop(self, reactor) -> None:
        if not self.proto.ended.called:
            self.transport.signalProcess("TERM")
            try:
                await self.proto.ended.addTimeout(15, reactor)
            except defer.TimeoutError:
                self.transport.signalProcess("KILL")


async def wait_for_port(reactor, port: int, child: Child) -> None:
    for _ in range(int(BOUND / 0.1)):
        if child.proto.ended.called:
            raise RuntimeError(f"the server exited before listening on {port}")
        try:
            p = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1),
                                      protocol.Protocol()).addTimeout(2, reactor)
            p.transport.loseConnection()
            return
        except Exception:
            await task.deferLater(reactor, 0.1, lambda: None)
    raise RuntimeError(f"nothing listens on {port} after {BOUND} s")


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0
