"""The chaos run's gateway: its process, one incarnation after another on
the same journal, the plan of when to kill or freeze it (seeded points of
the load, not of the clock), the monkey that does it, and the wait until
the journal has nothing left to resolve.
"""
from __future__ import annotations

import random
import signal

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread

from chaos_helpers import BIN, ChildProcess, journal_state, sleep, unresolved, wait_for_port, within


def action_schedule(rng: random.Random, *, kills: int, pauses: int, window: tuple[int, int],
                    gap: int) -> list[tuple[int, str]]:
    """(payment index, "kill" or "pause"): ``kills`` + ``pauses`` points in
    ``window``, at least ``gap`` payments apart, drawn uniformly among the
    placements that fit (points drawn in the window less the gaps, then
    spread out: no rejection sampling that a tight window would exhaust)."""
    actions = ["kill"] * kills + ["pause"] * pauses
    slack = (window[1] - window[0]) - (len(actions) - 1) * (gap - 1)
    if slack < len(actions):
        raise AssertionError(f"{len(actions)} actions {gap} payments apart do not fit in {window}")
    points = [window[0] + p + i * (gap - 1) for i, p in enumerate(sorted(rng.sample(range(slack), len(actions))))]
    rng.shuffle(actions)
    return list(zip(points, actions))


class Progress:
    """Which payments the switch has started; ``reached(n)`` fires once the
    n-th has, so an action falls at a point of the load, not of the clock."""

    def __init__(self):
        self.started = -1
        self._waiters: list[tuple[int, defer.Deferred]] = []

    def payment_started(self, index: int) -> None:
        self.started = max(self.started, index)
        for n, d in list(self._waiters):
            if self.started >= n:
                self._waiters.remove((n, d))
                d.callback(None)

    def reached(self, n: int) -> defer.Deferred:
        d = defer.Deferred()
        if self.started >= n:
            d.callback(None)
        else:
            self._waiters.append((n, d))
        return d


class Gateway:
    """The gateway process, one incarnation after another on the same journal."""

    def __init__(self, tmp_path, config, port, env):
        self.tmp_path, self.config, self.port, self.env = tmp_path, config, port, env
        self.incarnations: list[ChildProcess] = []

    @property
    def current(self) -> ChildProcess:
        return self.incarnations[-1]

    async def start(self) -> None:
        n = len(self.incarnations) + 1
        child = ChildProcess(reactor, [str(BIN / "billgw"), "--config", str(self.config), "serve"],
                             cwd=self.tmp_path, out=self.tmp_path / f"gateway.{n}.log",
                             err=self.tmp_path / f"gateway.{n}.err", env=self.env)
        self.incarnations.append(child)
        await wait_for_port(reactor, self.port, child, 30.0)

    async def kill(self) -> None:
        await self.current.kill("KILL")

    async def pause(self, seconds: float) -> None:
        """Freeze the process (its sockets stay open, the switch's messages
        queue in them), then let it go on: what it held in flight and what
        queued meanwhile are processed together."""
        self.current.transport.signalProcess(signal.SIGSTOP)  # Twisted names only KILL, TERM, INT
        try:
            await sleep(reactor, seconds)
        finally:
            self.current.transport.signalProcess(signal.SIGCONT)


async def chaos_monkey(gateway: Gateway, schedule: list[tuple[int, str]], progress: Progress, load, *,
                       seed: int, bound: float, pause_seconds: float) -> list[tuple[int, str]]:
    """At each planned point of the load: SIGKILL the gateway and start it
    again after a seeded pause, or SIGSTOP it for ``pause_seconds``."""
    rng = random.Random(seed)
    done = []
    for index, action in schedule:
        await within(progress.reached(index), bound)
        if load.called:
            break
        if action == "kill":
            await gateway.kill()
            await sleep(reactor, rng.uniform(0.2, 1.5))
            await gateway.start()
        else:
            await gateway.pause(pause_seconds)
        done.append((index, action))
    return done


async def settle(db_url: str, bound: float) -> dict:
    """Wait (at most ``bound`` s) until the journal has nothing left to resolve."""
    left = {"journal": 1}
    for _ in range(int(bound / 0.5)):
        left = unresolved(await deferToThread(journal_state, db_url))
        if not left:
            break
        await sleep(reactor, 0.5)
    return left
