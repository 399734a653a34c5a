"""The shared TCP-record transport, on StringTransport and a Clock: framing,
sign-on, sequence matching with several requests in flight, timeouts,
cancellation, heartbeat death, reconnect back-off, and what each ending
means for the money."""
from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from billgw.billing_adapters.interface import BillerOutcomeUnknown, BillerUnavailable, HealthState
from billgw.billing_adapters.transports.tcp_records import (
    FramingError,
    LinkSettings,
    RecordFramer,
    RecordLink,
)


# --- the framer, sans IO ---------------------------------------------------------

def test_length_prefixed_records_are_cut_from_any_chunking():
    framer = RecordFramer("length2", max_record=16)
    stream = framer.frame(b"abc") + framer.frame(b"defgh")
    assert stream == b"\x00\x03abc\x00\x05defgh"
    out = []
    for byte in stream:
        out += framer.feed(bytes([byte]))
    assert out == [b"abc", b"defgh"] and framer.pending == 0
    four = RecordFramer("length4")
    assert four.frame(b"x") == b"\x00\x00\x00\x01x" and four.feed(b"\x00\x00\x00\x02xy") == [b"xy"]


def test_fixed_length_records():
    framer = RecordFramer("fixed", record_length=4)
    assert framer.feed(b"abcdefg") == [b"abcd"] and framer.pending == 3
    assert framer.feed(b"h") == [b"efgh"]
    with pytest.raises(FramingError):
        framer.frame(b"abc")


def test_records_beyond_the_bound_are_refused_both_ways():
    framer = RecordFramer("length2", max_record=8)
    with pytest.raises(FramingError, match="record length 9"):
        framer.feed(b"\x00\x09")
    with pytest.raises(FramingError, match="record length 0"):
        RecordFramer("length2").feed(b"\x00\x00")
    with pytest.raises(FramingError, match="9 bytes"):
        framer.frame(b"x" * 9)
    with pytest.raises(ValueError, match="record_length"):
        RecordFramer("fixed")


# --- the link ---------------------------------------------------------------------

class Dialect:
    """Records 'KIND SEQ BODY' in ASCII; the transport sees only bytes."""

    refuse = False

    def sign_on(self, sequence):
        return b"SGON %d user" % sequence

    def sign_on_refusal(self, answer):
        return "bad password" if answer.split()[-1] == b"NO" else None

    def heartbeat(self, sequence, now):
        return b"HBRQ %d %s" % (sequence, now.strftime("%H%M%S").encode())

    def unsolicited(self, record):
        return b"HBRA %s" % record.split()[1] if record.startswith(b"HBRQ ") else None

    def sequence_of(self, record):
        try:
            return int(record.split()[1])
        except (IndexError, ValueError):
            raise ValueError(f"no sequence in {record!r}") from None


class Endpoint:
    """Connects to StringTransports; ``refuse`` makes the next attempts fail."""

    def __init__(self):
        self.connections = []
        self.refuse = 0

    def connect(self, factory):
        if self.refuse:
            self.refuse -= 1
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


SETTINGS = LinkSettings(request_timeout=10, sign_on_timeout=5, heartbeat_interval=30, heartbeat_timeout=5,
                        reconnect_initial=1, reconnect_max=8, start_wait=3, max_record=64)


class Host:
    """Plays the host on the current connection."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.framer = RecordFramer("length2")

    @property
    def protocol(self):
        return self.endpoint.connections[-1][0]

    @property
    def transport(self):
        return self.endpoint.connections[-1][1]

    def read(self):
        records = self.framer.feed(self.transport.value())
        self.transport.clear()
        return records

    def answer(self, record: bytes):
        self.protocol.dataReceived(RecordFramer("length2").frame(record))

    def sign_on(self, result=b"OK"):
        [sign_on] = self.read()
        assert sign_on.startswith(b"SGON ")
        self.answer(b"SGOA %s %s" % (sign_on.split()[1], result))

    def drop(self):
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def world(log):
    clock = MemoryReactorClock()
    endpoint = Endpoint()
    link = RecordLink(clock, endpoint, Dialect(), SETTINGS, log=log, jitter=lambda: 0)
    return clock, endpoint, link, Host(endpoint)


def started(world):
    clock, endpoint, link, host = world
    d = link.start()
    host.sign_on()
    assert d.called and link.health().state is HealthState.UP
    return link, host


def test_the_link_signs_on_before_any_request(world, log_capture):
    clock, endpoint, link, host = world
    d = link.start()
    assert not d.called
    failed = []
    link.request("PAYR", lambda seq: b"PAYR %d" % seq).addErrback(failed.append)
    assert failed[0].check(BillerUnavailable)  # not signed on: never sent
    assert host.read() == [b"SGON 1 user"]
    host.answer(b"SGOA 1 OK")
    assert d.called and link.health().state is HealthState.UP


def test_answers_are_matched_by_sequence_with_several_in_flight(world):
    link, host = started(world)
    results = {}
    for name in ("a", "b", "c"):
        link.request("X", lambda seq, n=name: b"REQ %d %s" % (seq, n.encode())).addCallback(
            lambda answer, n=name: results.__setitem__(n, answer))
    sent = host.read()
    assert [r.split()[2] for r in sent] == [b"a", b"b", b"c"]
    assert len({r.split()[1] for r in sent}) == 3
    # The host answers out of order; each reaches its own request.
    for record in reversed(sent):
        host.answer(b"ANS %s for-%s" % (record.split()[1], record.split()[2]))
    assert results == {n: b"ANS %s for-%s" % (r.split()[1], n.encode()) for n, r in zip("abc", sent)}
    assert link.current.pending == {}


def test_an_answer_nobody_waits_for_is_ignored(world, log_capture):
    link, host = started(world)
    got = []
    link.request("X", lambda seq: b"REQ %d" % seq).addCallback(got.append)
    [request] = host.read()
    host.answer(b"ANS %s first" % request.split()[1])
    host.answer(b"ANS %s second" % request.split()[1])  # a host answering twice
    assert got == [b"ANS %s first" % request.split()[1]]
    assert [e["sequence"] for e in log_capture.events("record_link_unmatched_answer")] == [int(request.split()[1])]


def test_the_hosts_own_heartbeat_is_answered(world, log_capture):
    link, host = started(world)
    host.answer(b"HBRQ 777 from-host")
    assert host.read() == [b"HBRA 777"]
    assert log_capture.events("record_link_unmatched_answer") == []


def test_no_answer_in_time_is_outcome_unknown_and_a_late_answer_is_ignored(world):
    clock, endpoint, link, host = world
    link, host = started(world)
    failed = []
    link.request("X", lambda seq: b"REQ %d" % seq, timeout=4).addErrback(failed.append)
    [request] = host.read()
    clock.advance(3.9)
    assert not failed
    clock.advance(0.2)
    assert failed[0].check(BillerOutcomeUnknown) and "within 4 s" in str(failed[0].value)
    host.answer(b"ANS %s late" % request.split()[1])  # ignored, nothing raised
    assert link.current.pending == {}


def test_cancelling_a_request_forgets_it(world):
    clock, endpoint, link, host = world
    link, host = started(world)
    d = link.request("X", lambda seq: b"REQ %d" % seq)
    [request] = host.read()
    d.cancel()
    assert d.called and isinstance(d.result, Failure) and d.result.check(CancelledError)
    d.addErrback(lambda f: None)
    assert link.current.pending == {}
    assert len([c for c in clock.getDelayedCalls() if c.active()]) == 1  # its timer is gone; the heartbeat's stays
    host.answer(b"ANS %s late" % request.split()[1])


def test_a_lost_link_makes_every_request_on_it_outcome_unknown(world):
    link, host = started(world)
    failed = []
    for _ in range(2):
        link.request("X", lambda seq: b"REQ %d" % seq).addErrback(failed.append)
    host.drop()
    assert [f.check(BillerOutcomeUnknown) for f in failed] == [BillerOutcomeUnknown] * 2
    after = []
    link.request("X", lambda seq: b"REQ %d" % seq).addErrback(after.append)
    assert after[0].check(BillerUnavailable)  # nothing sent while it is down
    assert link.health().state is HealthState.DOWN


def test_an_unreadable_record_drops_the_link(world):
    link, host = started(world)
    failed = []
    link.request("X", lambda seq: b"REQ %d" % seq).addErrback(failed.append)
    host.answer(b"garbage")
    assert host.transport.disconnecting
    host.protocol.connectionLost(Failure(ConnectionDone()))
    assert failed[0].check(BillerOutcomeUnknown)


def test_an_over_long_record_from_the_host_drops_the_link(world):
    link, host = started(world)
    host.protocol.dataReceived(b"\x00\xff")  # max_record is 64
    assert host.transport.disconnecting


def test_a_record_that_cannot_be_sent_is_unavailable(world):
    link, host = started(world)
    failed = []
    link.request("X", lambda seq: b"x" * 65).addErrback(failed.append)
    link.request("X", lambda seq: (_ for _ in ()).throw(ValueError("amount does not fit"))).addErrback(failed.append)
    assert [f.check(BillerUnavailable) for f in failed] == [BillerUnavailable] * 2
    assert host.read() == [] and link.current.pending == {}


def test_an_unanswered_heartbeat_declares_the_link_dead(world, log_capture):
    clock, endpoint, link, host = world
    link, host = started(world)
    in_flight = []
    clock.advance(30)
    [heartbeat] = host.read()
    assert heartbeat.startswith(b"HBRQ ")
    host.answer(b"HBRA %s" % heartbeat.split()[1])  # answered: alive
    clock.advance(30)
    [heartbeat] = host.read()
    link.request("X", lambda seq: b"REQ %d" % seq, timeout=60).addErrback(in_flight.append)
    clock.advance(5)  # heartbeat_timeout, unanswered
    assert host.transport.disconnecting
    assert log_capture.events("record_link_dead")
    host.protocol.connectionLost(Failure(ConnectionDone()))
    assert in_flight[0].check(BillerOutcomeUnknown)


def test_reconnects_with_back_off_and_signs_on_again(world):
    clock, endpoint, link, host = world
    link, host = started(world)
    endpoint.refuse = 3
    host.drop()
    delays = []
    for _ in range(4):
        [call] = [c for c in clock.getDelayedCalls() if c.active()]
        delays.append(call.getTime() - clock.seconds())
        clock.advance(delays[-1])
    assert delays == [1, 2, 4, 8]  # doubling, from reconnect_initial
    assert len(endpoint.connections) == 2
    host.sign_on()
    assert link.health().state is HealthState.UP and link.connects == 2
    got = []
    link.request("X", lambda seq: b"REQ %d" % seq).addCallback(got.append)
    [request] = host.read()
    assert request.split()[1] != b"1"  # numbers are not reused across links
    host.answer(b"ANS %s" % request.split()[1])
    assert got


def test_a_refused_sign_on_drops_the_link_and_backs_off(world, log_capture):
    log_capture.allow_errors = True  # a refused sign-on is logged as an error: an operator must act
    clock, endpoint, link, host = world
    d = link.start()
    host.sign_on(result=b"NO")
    assert host.transport.disconnecting and link.health().state is HealthState.DOWN
    host.protocol.connectionLost(Failure(ConnectionDone()))
    clock.advance(1)
    host.sign_on(result=b"NO")
    host.protocol.connectionLost(Failure(ConnectionDone()))
    clock.advance(1.9)
    assert len(endpoint.connections) == 2  # backing off, though each TCP connect succeeded
    clock.advance(0.1)
    assert len(endpoint.connections) == 3
    assert [e["reason"] for e in log_capture.events("record_link_sign_on_refused")] == ["bad password"] * 2
    assert d.called  # start() waited start_wait (3 s), not for ever


def test_an_unanswered_sign_on_drops_the_link(world):
    clock, endpoint, link, host = world
    link.start()
    assert host.read()
    clock.advance(5)
    assert host.transport.disconnecting


def test_stop_closes_the_link_and_refuses_further_requests(world):
    link, host = started(world)
    stopped = link.stop()
    assert host.transport.disconnecting
    host.protocol.connectionLost(Failure(ConnectionDone()))
    assert stopped.called and link.health().state is HealthState.STOPPED
    failed = []
    link.request("X", lambda seq: b"REQ %d" % seq).addErrback(failed.append)
    assert failed[0].check(BillerUnavailable)


def test_sequence_numbers_wrap_and_skip_those_in_flight(log):
    clock, endpoint = MemoryReactorClock(), Endpoint()
    link = RecordLink(clock, endpoint, Dialect(), LinkSettings(max_sequence=3), log=log)
    assert [link.next_sequence({}) for _ in range(4)] == [1, 2, 3, 1]
    assert link.next_sequence({2: None}) == 3
    with pytest.raises(BillerUnavailable):
        link.next_sequence({1: None, 2: None, 3: None})
