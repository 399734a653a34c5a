"""Receipts through an SMSC from another implementation: the npm ``smpp``
package (node), acting as the server (``tests/integration/npm_smsc/``).

It shares no code with billgw: its PDU codec, its GSM 03.38 and UCS-2
decoders and the reassembly (by the 8-bit or 16-bit UDH, or the SAR TLVs)
are its own.  Each receipt must arrive with exactly the octets our encoder
wrote (``raw``) and decode, in that package, to exactly the text rendered,
in GSM-7 and UCS-2, under each concatenation scheme.

``make venv`` installs the package (``npm ci`` in that folder) when node is
on the machine; without node these tests are skipped and say so.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol

from billgw.sms.encoding import CONCAT_SAR, CONCAT_UDH8, CONCAT_UDH16, split_message
from billgw.sms.smpp_link import LinkState, SmppLink, SmppLinkConfig

HERE = Path(__file__).parent / "npm_smsc"
NODE = shutil.which("node")
SYSTEM_ID, PASSWORD = "billgw", "npm-pw"
TIMEOUT = 20.0
MSISDN = "962791234567"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the npm smpp SMSC cannot run")

TEXTS = {
    # GSM-7 with escaped characters (two septets each) across the part boundaries.
    "gsm7": "Paid 12.500 JOD to Orange Jordan {ref} [acct] 0791234567 ~ fee 0.250 € | ^ \\ "
            + "".join("€abc{}"[i % 6] for i in range(300)),
    # UCS-2: Arabic with a surrogate pair (an emoji) near a boundary.
    "ucs2": "دفع 12.500 JOD إلى أورانج الأردن " * 4 + "😀" + "مرجع 3F9A1C07B2 " * 5,
    "short_gsm7": "Paid 1.000 JOD to Water, acct 1, Ref 3F9A1C07B2",
    "short_ucs2": "دفع 1.000 JOD مرجع 3F9A1C07B2",
}


class _NodeSmsc(protocol.ProcessProtocol):
    """The node server as a child of the reactor: its stdout is JSON lines."""

    def __init__(self):
        self.buffer = b""
        self.events: list[dict] = []
        self.waiters: list[tuple] = []
        self.ended = defer.Deferred()
        self.stderr = b""

    def outReceived(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.events.append(json.loads(line))
            self._check()

    def errReceived(self, data):
        self.stderr += data[:4000]

    def processEnded(self, reason):
        self.ended.callback(None)

    def wait(self, event: str, count: int = 1) -> defer.Deferred:
        d = defer.Deferred()
        self.waiters.append((event, count, d))
        self._check()
        return d

    def of(self, event: str) -> list[dict]:
        return [e for e in self.events if e["event"] == event]

    def _check(self):
        for waiter in list(self.waiters):
            event, count, d = waiter
            found = self.of(event)
            if len(found) >= count:
                self.waiters.remove(waiter)
                d.callback(found[:count])


@pytest.fixture
def reactor():
    from twisted.internet import reactor as global_reactor

    return global_reactor


@pytest.fixture
def npm_smsc(reactor):
    if not (HERE / "node_modules" / "smpp").is_dir():
        pytest.fail(f"node is installed but the npm smpp package is not: run `make venv` (npm ci in {HERE})")
    proc = _NodeSmsc()
    transport = reactor.spawnProcess(proc, NODE, [NODE, "server.js", SYSTEM_ID, PASSWORD], path=str(HERE),
                                     env={"PATH": os.environ.get("PATH", "")})
    [listening] = pytest_twisted.blockon(proc.wait("listening").addTimeout(TIMEOUT, reactor))
    yield proc, listening["port"]
    transport.closeStdin()  # the server exits when its stdin closes
    pytest_twisted.blockon(proc.ended.addTimeout(TIMEOUT, reactor).addErrback(lambda _: transport.signalProcess("KILL")))


@pytest.fixture
def link_to(reactor):
    links = []

    def make(port, **overrides):
        config = dict(host="127.0.0.1", port=port, system_id=SYSTEM_ID, password=PASSWORD, socket_timeout=5.0,
                      response_timeout=5.0, rate=1000.0, reconnect_initial=0.05, reconnect_max=0.5,
                      stop_timeout=8.0, bind_mode="transmitter", validity_period=3600.0)
        config.update(overrides)
        link = SmppLink(reactor, SmppLinkConfig(**config))
        link.startService()
        links.append(link)
        return link

    yield make
    for link in links:
        if link.running:
            pytest_twisted.blockon(link.stopService())


@pytest.mark.parametrize("scheme", [CONCAT_UDH8, CONCAT_UDH16, CONCAT_SAR])
@pytest_twisted.inlineCallbacks
def test_receipts_reassemble_byte_exact_in_the_npm_smsc(npm_smsc, link_to, reactor, scheme):
    proc, port = npm_smsc
    link = link_to(port, concatenation=scheme)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    names = list(TEXTS)
    results = []
    for name in names:  # one after the other: the server's messages then come in this order
        results.append((yield link.submit(MSISDN, TEXTS[name]).addTimeout(TIMEOUT, reactor)))
    messages = yield proc.wait("message", len(names)).addTimeout(TIMEOUT, reactor)
    references = set()
    for name, result, message in zip(names, results, messages):
        text = TEXTS[name]
        ours = split_message(text, scheme=scheme)
        assert message["text"] == text, (scheme, name)
        assert bytes.fromhex(message["raw"]) == b"".join(_payloads(ours))
        assert message["data_coding"] == (0 if name.endswith("gsm7") else 8)
        assert message["parts"] == len(ours.parts) == result.parts
        assert message["message_ids"] == result.message_ids
        assert message["destination"] == MSISDN
        if len(ours.parts) > 1:
            assert message["scheme"] == scheme
            references.add(message["reference"])
    assert len(references) == 2  # the two long messages to one handset: two references
    parts = proc.of("part")
    assert {(p["dest_ton"], p["dest_npi"]) for p in parts} == {(1, 1)}
    # 000000010000000R read by the package as "one hour from now" (a minute's slack for a slow machine).
    assert all(3540 <= p["validity_seconds"] <= 3600 for p in parts)
    long_parts = [p for p in parts if p["concatenation"]]
    assert {p["esm_class"] & 0x40 for p in long_parts} == ({0} if scheme == CONCAT_SAR else {0x40})


def _payloads(message):
    """Each part's user data without its UDH."""
    out = []
    for part in message.segments:
        data = part.short_message
        out.append(data[data[0] + 1:] if part.esm_class & 0x40 else data)
    return out


@pytest.mark.allow_errors  # smpp.bind_refused is logged at error level, on purpose: the alert
@pytest_twisted.inlineCallbacks
def test_a_wrong_password_is_refused_by_the_npm_smsc_and_not_retried(npm_smsc, link_to, reactor,
                                                                     fail_on_logged_errors):
    proc, port = npm_smsc
    link = link_to(port, password="wrong")
    yield link.wait_for_state(LinkState.REFUSED).addTimeout(TIMEOUT, reactor)
    assert [b["ok"] for b in proc.of("bind")] == [False]
    assert link.health()["last_bind_status"] == 0x0E
    assert [e["event"] for e in fail_on_logged_errors if e.get("log_level") == "error"] == ["smpp.bind_refused"]
