"""Routing by destination prefix over several SMSCs and binds: unit tests on
fake binds, and two SMSC simulators over real sockets where each gets its
own subscribers' receipts and its receipts are matched within it."""
import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer

from billgw.sms.dlr_recorder import DeliveryRecorder
from billgw.sms.outbox import sms_outbox, sms_outbox_parts
from billgw.sms.sender import OutboxSender
from billgw.sms.smpp_link import LinkState, SmppInvalidMessage, SmppLinkDown
from billgw.sms.smpp_router import SmppRouter, SmscRoute, choose_route
from billgw.sms.smsc_dlr import DlrPolicy
from billgw.sms.smsc_sim import SmscFactory

TIMEOUT = 10.0


class FakeBind:
    def __init__(self, name, mode="transceiver", bound=True, free=10, window=10):
        self.name, self.bound, self.free, self.window = name, bound, free, window
        self.transmits = mode != "receiver"
        self.submitted = []
        self.on_deliver = None
        self.parent = None

    def setServiceParent(self, parent):
        self.parent = parent

    def submit(self, destination, text):
        self.submitted.append(destination)
        return defer.succeed(self.name)


def router(*routes):
    return SmppRouter([SmscRoute(name, prefixes, tuple(binds)) for name, prefixes, binds in routes], country="JO")


def test_the_longest_prefix_wins_and_the_smsc_without_prefixes_takes_the_rest():
    routes = [SmscRoute("agg", (), ()), SmscRoute("jo", ("962",), ()), SmscRoute("zain", ("96279",), ())]
    assert choose_route(routes, "962791234567").name == "zain"
    assert choose_route(routes, "962771234567").name == "jo"
    assert choose_route(routes, "306912345678").name == "agg"
    assert choose_route(routes[1:], "306912345678") is None


def test_a_national_number_is_routed_by_its_e164_form():
    zain, agg = FakeBind("zain"), FakeBind("agg")
    r = router(("zain", ("96279",), [zain]), ("agg", (), [agg]))
    assert r.submit("0791234567", "hi").result == "zain"
    assert zain.submitted == ["0791234567"]  # the bind normalises it again for the wire


def test_no_route_fails_the_message_alone():
    r = router(("zain", ("96279",), [FakeBind("zain")]))
    d = r.submit("306912345678", "hi")
    assert isinstance(d.result.value, SmppInvalidMessage) and "no SMSC route" in str(d.result.value)
    d.addErrback(lambda f: None)


def test_within_an_smsc_the_bound_transmitting_bind_with_most_room_takes_it():
    busy, idle, down, receiver = (FakeBind("busy", free=1), FakeBind("idle", free=8),
                                  FakeBind("down", bound=False, free=10), FakeBind("rx", mode="receiver", free=10))
    r = router(("zain", (), [busy, idle, down, receiver]))
    assert r.submit("962791234567", "hi").result == "idle"
    assert r.window == 20 and r.bound  # the bound transmitting binds' windows


def test_an_smsc_with_no_bound_bind_hands_the_message_back_while_another_works():
    r = router(("zain", ("96279",), [FakeBind("zain", bound=False)]), ("agg", (), [FakeBind("agg")]))
    d = r.submit("962791234567", "hi")
    assert isinstance(d.result.value, SmppLinkDown) and "SMSC zain" in str(d.result.value)
    d.addErrback(lambda f: None)
    assert r.bound  # the sender keeps sending to agg


def test_receipts_of_every_bind_go_to_one_handler():
    binds = [FakeBind("a"), FakeBind("b", mode="receiver")]
    r = router(("x", (), binds))
    r.on_deliver = handler = object()
    assert [b.on_deliver for b in binds] == [handler, handler]


@pytest_twisted.inlineCallbacks
def test_two_smscs_each_get_their_subscribers_and_their_receipts_match_within_them(
        reactor, engine, smsc_factory, make_link):
    from billgw.sms import outbox
    from billgw.sms.outbox import OutboxKind

    # Both simulators number their ids alike: receipts must be matched within their SMSC.
    zain_port, zain = yield smsc_factory(SmscFactory, dlr=DlrPolicy(stat_for={"": "UNDELIV"}))
    agg_port, agg = yield smsc_factory(SmscFactory, dlr=DlrPolicy())
    zain_link = make_link(zain_port.getHost().port, name="zain")
    agg_link = make_link(agg_port.getHost().port, name="agg")
    r = SmppRouter([SmscRoute("zain", ("96279",), (zain_link,)), SmscRoute("agg", (), (agg_link,))], country="JO")
    yield r.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)

    def run_in_db(fn, *args):
        with engine.begin() as conn:
            return defer.succeed(fn(conn, *args))

    recorder = DeliveryRecorder(run_in_db=run_in_db, clock=reactor)
    r.on_deliver = recorder.deliver_sm
    with engine.begin() as conn:
        ids = {pid: outbox.enqueue(conn, payment_id=pid, kind=OutboxKind.RECEIPT, msisdn=msisdn, language="en",
                                   text=f"receipt {pid}", now=reactor.seconds())
               for pid, msisdn in (("Z1", "0791234567"), ("A1", "962771234567"), ("A2", "306912345678"))}
    sender = OutboxSender(run_in_db=run_in_db, link=r, clock=reactor, owner="t", poll_interval=3600.0,
                          on_parts_recorded=recorder.parts_recorded)
    sender.startService()
    try:
        yield sender.wake().addTimeout(TIMEOUT, reactor)
        yield recorder.wait_recorded(3).addTimeout(TIMEOUT, reactor)
    finally:
        yield sender.stopService()
    assert [m.destination_addr for m in zain.messages_received] == ["962791234567"]
    assert sorted(m.destination_addr for m in agg.messages_received) == ["306912345678", "962771234567"]
    with engine.connect() as conn:
        states = dict(conn.execute(select(sms_outbox.c.payment_id, sms_outbox.c.state)).all())
        smscs = dict(conn.execute(select(sms_outbox_parts.c.outbox_id, sms_outbox_parts.c.smsc)).all())
    assert states == {"Z1": "UNDELIVERABLE", "A1": "DELIVERED", "A2": "DELIVERED"}
    assert smscs == {ids["Z1"]: "zain", ids["A1"]: "agg", ids["A2"]: "agg"}
