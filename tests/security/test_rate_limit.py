"""A token bucket per terminal: the pure buckets on time passed in, and the
listener answering beyond it at once, without the processor (Clock)."""
import pytest
from structlog.testing import capture_logs

from billgw.gateway.config import ConfigError, parse_settings
from billgw.gateway.peers import PeerTable, make_peer
from billgw.gateway.rate_limit import RateLimit, TokenBuckets
from billgw.iso8583.framing import encode_frame

from security_wire import answers, connect, gateway, payment, reversal, sign_on


def test_a_bucket_allows_its_burst_then_its_rate():
    buckets = TokenBuckets(RateLimit(rate=2.0, burst=3))
    assert [buckets.take("ATM00001", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("ATM00002", 0.0)  # another terminal has its own bucket
    assert not buckets.take("ATM00001", 0.4)  # 0.8 of a token
    assert buckets.take("ATM00001", 0.5)  # one token after half a second at 2/s
    assert not buckets.take("ATM00001", 0.5)
    # Refills to the burst, never beyond it.
    assert [buckets.take("ATM00001", 100.0) for _ in range(4)] == [True, True, True, False]


def test_buckets_are_bounded_least_recently_used_dropped():
    buckets = TokenBuckets(RateLimit(rate=1.0, burst=1), max_keys=3)
    for n in range(10):
        buckets.take(f"T{n}", 0.0)
    assert len(buckets) == 3
    assert not buckets.take("T9", 0.0)  # still remembered


def test_a_clock_going_back_refills_nothing():
    buckets = TokenBuckets(RateLimit(rate=1.0, burst=1))
    assert buckets.take("T", 10.0)
    assert not buckets.take("T", 5.0)


LIMITED = make_peer("bank-r", sources=["10.1.0.0/16"], acquirers=["123456"], terminals=["ATM[0-9]{5}"],
                    rate_limit=RateLimit(rate=1.0, burst=2))


def test_a_terminal_beyond_its_rate_is_answered_at_once_and_counted():
    factory, processor, clock = gateway(peers=PeerTable([LIMITED]))
    proto, transport = connect(factory)
    proto.dataReceived(encode_frame(sign_on()))
    with capture_logs() as logs:
        for n in range(4):
            proto.dataReceived(encode_frame(payment(stan=f"{n + 1:06d}")))
        proto.dataReceived(encode_frame(payment(stan="000010", terminal="ATM00002")))
        # Reversals settle money already moved: never rate-limited.
        proto.dataReceived(encode_frame(reversal()))
    codes = [(a.fields.get("11"), a.response_code) for a in answers(transport)[1:]]
    assert codes == [("000003", "65"), ("000004", "65")]
    assert [r.fields["11"] for r, _ in processor.pending] == ["000001", "000002", "000010", "000500"]
    assert factory.counters["rate_limited"] == 2
    refusals = [e for e in logs if e["event"] == "request refused: over the rate limit"]
    assert [(e["terminal"], e["refusals"]) for e in refusals] == [("ATM00001", 1), ("ATM00001", 2)]
    clock.advance(1.0)
    proto.dataReceived(encode_frame(payment(stan="000005")))
    assert processor.pending[-1][0].fields["11"] == "000005"
    assert factory.status()["refusals"] == {"rate_limited": 2}


def test_rate_limit_config_keys():
    import tomllib
    base = '[peers.r]\nsources = ["10.0.0.0/8"]\nacquirers = ["1"]\nterminals = ["T"]\n'
    peer = parse_settings(tomllib.loads(base + "rate_limit = 0.5\nrate_burst = 4\n"), environ={}).peers.peers[0]
    assert peer.rate_limit == RateLimit(0.5, 4)
    with pytest.raises(ConfigError, match="peers.r.rate_burst: set rate_limit too"):
        parse_settings(tomllib.loads(base + "rate_burst = 4\n"), environ={})
    with pytest.raises(ConfigError, match="peers.r.rate_limit: must be greater than zero"):
        parse_settings(tomllib.loads(base + "rate_limit = 0\n"), environ={})


def test_advices_and_reversals_have_a_bucket_per_peer():
    """Each may leave a row for a person: a peer gets so many at once, and
    what is refused is not acknowledged (the switch repeats it later)."""
    peer = make_peer("bank-r", sources=["10.1.0.0/16"], acquirers=["123456"], terminals=["ATM[0-9]{5}"],
                     advice_reversal_rate=RateLimit(rate=0.5, burst=2))
    factory, processor, clock = gateway(peers=PeerTable([peer]))
    proto, transport = connect(factory)
    proto.dataReceived(encode_frame(sign_on()))
    proto.dataReceived(encode_frame(reversal(stan="000501")) + encode_frame(payment(stan="000010", mti="0220"))
                       + encode_frame(reversal(stan="000502", terminal="ATM00002")))
    for n in range(5):  # 0200s are not in this bucket
        proto.dataReceived(encode_frame(payment(stan=f"{n + 1:06d}")))
    refused = [(a.mti, a.fields["11"], a.response_code) for a in answers(transport)[1:]]
    assert refused == [("0430", "000502", "65")]
    assert len(processor.pending) == 7 and factory.counters["advice_reversal_rate_limited"] == 1
    clock.advance(2.0)
    proto.dataReceived(encode_frame(reversal(stan="000502", terminal="ATM00002")))  # the switch's repeat
    assert processor.pending[-1][0].fields["11"] == "000502"
