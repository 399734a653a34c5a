"""ISO 9797-1 MAC algorithm 3 (retail MAC): published vectors, the F64/F128
placement, and a peer whose messages must carry it (bytes on the wire)."""
import os

import pytest
from structlog.testing import capture_logs

from billgw.gateway.config import ConfigError, parse_settings
from billgw.gateway.peers import PeerTable, make_peer
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.mac import MacError, MacKey, mac_field, pad, retail_mac, sign, verify
from billgw.iso8583.messages import decode_response, encode_fields

from security_wire import connect, gateway, payment, reversal, sign_on

KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


# ISO/IEC 9797-1:2011 Annex B.4, MAC algorithm 3 with padding method 1, key
# 0123456789ABCDEF FEDCBA9876543210; the Annex prints the MAC truncated to its
# first 4 bytes.  As quoted in github.com/openemv/crypto,
# test/crypto_tdes2_retail_mac_test.c, which names the Annex as its source.
@pytest.mark.parametrize("data, mac4", [
    (b"Now is the time for all ", "A1C72E74"),
    (b"Now is the time for it", "2E2B1428"),
])
def test_iso_9797_1_annex_b_vectors(data, mac4):
    assert retail_mac(KEY, data, 1).hex().upper()[:8] == mac4


# Full 8-byte MACs, padding methods 1 and 2: the vectors of pyemv's
# tests/test_mac.py (github.com/knovichikhin/pyemv, test_mac_iso9797_3).
@pytest.mark.parametrize("padding, mac", [(1, "78DA3D3DEB48FD4D"), (2, "2BC2D9EDE0CF31F6")])
def test_pyemv_vectors(padding, mac):
    key = bytes.fromhex("AAAAAAAAAAAAAAAA" "BBBBBBBBBBBBBBBB")
    assert retail_mac(key, b"hello world", padding).hex().upper() == mac


def test_key_check_value_of_the_standard_test_key():
    # The KCV operators compare when a key is loaded: 3DES of zeros, 3 bytes.
    assert MacKey(KEY).check_value() == "08D7B4"


def test_padding_methods():
    assert pad(b"", 1) == bytes(8)
    assert pad(b"12345678", 1) == b"12345678"
    assert pad(b"123", 1) == b"123" + bytes(5)
    assert pad(b"12345678", 2) == b"12345678\x80" + bytes(7)


def test_keys_that_are_not_double_length_or_degenerate_are_refused():
    with pytest.raises(ValueError, match="32 hexadecimal"):
        MacKey.from_hex("0123456789ABCDEF")
    with pytest.raises(ValueError, match="halves"):
        MacKey.from_hex("0123456789ABCDEF0123456789ABCDEF")
    assert "0123" not in repr(MacKey(KEY))


def test_sign_then_verify_round_trip_in_f64_and_f128():
    key = MacKey(KEY)
    primary = payment()  # no field above 64
    signed = sign(primary, key)
    assert mac_field(signed) == "64" and len(signed) == len(primary) + 16
    verify(signed, key)
    secondary = sign(sign_on(), key)  # F70: secondary bitmap, MAC in F128
    assert mac_field(secondary) == "128"
    verify(secondary, key)
    assert decode_response(secondary).fields["128"] == secondary[-16:].decode()


@pytest.mark.parametrize("tamper, reason", [
    (lambda m: m[:-1] + (b"0" if m[-1:] != b"0" else b"1"), "wrong"),
    (lambda m: m[:40] + bytes([m[40] ^ 1]) + m[41:], "wrong"),
])
def test_any_changed_byte_fails(tamper, reason):
    signed = sign(payment(), MacKey(KEY))
    with pytest.raises(MacError, match=reason):
        verify(tamper(signed), MacKey(KEY))


def test_missing_mac_and_other_key_fail():
    with pytest.raises(MacError, match="missing"):
        verify(payment(), MacKey(KEY))
    other = MacKey(bytes.fromhex("00112233445566778899AABBCCDDEEFF"))
    with pytest.raises(MacError, match="wrong"):
        verify(sign(payment(), other), MacKey(KEY))


MACED = make_peer("bank-m", sources=["10.1.0.0/16"], acquirers=["123456"], terminals=["ATM[0-9]{5}"],
                  mac=MacKey(KEY))


def answers_of(transport):
    framer = Framer("binary2", 4096)
    return framer.feed(transport.value())


def test_a_maced_peer_is_answered_with_a_mac_and_a_bad_mac_goes_no_further():
    factory, processor, _ = gateway(peers=PeerTable([MACED]))
    proto, transport = connect(factory)
    proto.dataReceived(encode_frame(sign(sign_on(), MacKey(KEY))))
    proto.dataReceived(encode_frame(payment(stan="000001")))  # no MAC at all
    forged = sign(payment(stan="000002"), MacKey(KEY))
    forged = forged.replace(b"000000012500", b"000000099900")  # the amount changed in transit
    with capture_logs() as logs:
        proto.dataReceived(encode_frame(forged))
    proto.dataReceived(encode_frame(sign(reversal(), MacKey(KEY))[:-16] + b"0" * 16))
    frames = answers_of(transport)
    for frame in frames:
        verify(frame, MacKey(KEY))  # every answer carries our MAC
    codes = [(decode_response(f).mti, decode_response(f).fields.get("11"), decode_response(f).response_code)
             for f in frames]
    assert codes == [("0810", "000001", "00"), ("0210", "000001", "63"), ("0210", "000002", "63"),
                     ("0430", "000500", "63")]
    assert processor.pending == []  # never reached the processor, so no journal, no biller
    assert factory.counters["mac_failure"] == 3
    assert [e["reason"] for e in logs if e["event"] == "request refused: MAC check failed"] == ["MAC (F64) wrong"]


def test_a_good_mac_reaches_the_processor():
    factory, processor, _ = gateway(peers=PeerTable([MACED]))
    proto, _ = connect(factory)
    proto.dataReceived(encode_frame(sign(sign_on(), MacKey(KEY))) + encode_frame(sign(payment(), MacKey(KEY))))
    assert [r.mti for r, _ in processor.pending] == ["0200"]


def test_a_sign_on_with_a_bad_mac_does_not_sign_on():
    factory, processor, _ = gateway(peers=PeerTable([MACED]))
    proto, transport = connect(factory)
    proto.dataReceived(encode_frame(sign_on()))
    proto.dataReceived(encode_frame(sign(payment(), MacKey(KEY))))
    codes = [decode_response(f).response_code for f in answers_of(transport)]
    assert codes == ["63", "05"] and processor.pending == []


def _config(peer_extra: str, tmp_path=None):
    import tomllib
    text = f"""
[peers.m]
sources = ["10.0.0.0/8"]
acquirers = ["123456"]
terminals = ["ATM[0-9]{{5}}"]
{peer_extra}
"""
    return tomllib.loads(text)


def test_mac_key_from_the_environment_never_a_default():
    settings = parse_settings(_config('mac_key_env = "BANK_M_MAC"'), environ={"BANK_M_MAC": KEY.hex()})
    assert settings.peers.peers[0].mac == MacKey(KEY)
    with pytest.raises(ConfigError, match="peers.m.mac_key_env: environment variable BANK_M_MAC is not set"):
        parse_settings(_config('mac_key_env = "BANK_M_MAC"'), environ={})
    assert parse_settings(_config(""), environ={}).peers.peers[0].mac is None


def test_mac_key_file_outside_the_configuration_and_owner_only(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    key_file = keys / "m.key"
    key_file.write_text(KEY.hex().upper() + "\n")
    os.chmod(key_file, 0o644)
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    conf = conf_dir / "billgw.toml"
    conf.write_text("")
    with pytest.raises(ConfigError, match="readable by others"):
        parse_settings(_config(f'mac_key_file = "{key_file}"'), environ={}, source=str(conf))
    os.chmod(key_file, 0o600)
    settings = parse_settings(_config(f'mac_key_file = "{key_file}"\nmac_padding = 2'), environ={},
                              source=str(conf))
    assert settings.peers.peers[0].mac == MacKey(KEY, 2)
    inside = conf_dir / "m.key"
    inside.write_text(KEY.hex())
    os.chmod(inside, 0o600)
    with pytest.raises(ConfigError, match="peers.m.mac_key_file: .*beside the configuration"):
        parse_settings(_config(f'mac_key_file = "{inside}"'), environ={}, source=str(conf))


def test_check_config_prints_each_mac_keys_check_value(tmp_path, monkeypatch, capsys):
    from billgw.gateway.cli import main

    conf = tmp_path / "billgw.toml"
    conf.write_text('[peers.m]\nsources = ["127.0.0.1"]\nacquirers = ["123456"]\nterminals = ["ATM[0-9]{5}"]\n'
                    'mac_key_env = "BANK_M_MAC"\n')
    monkeypatch.setenv("BANK_M_MAC", KEY.hex())
    main(["--config", str(conf), "check-config"])
    out = capsys.readouterr().out
    assert "peer m: MAC key check value 08D7B4" in out and KEY.hex() not in out.lower()


@pytest.mark.parametrize("bitmap", [b"0x00000000000001", b"+000000000000001", b"0000_00000000001", b" 00000000000001 "])
def test_a_bitmap_that_is_not_16_hex_digits_is_unreadable(bitmap):
    with pytest.raises(MacError, match="bitmap unreadable"):
        verify(b"0200" + bitmap + b"0" * 40, MacKey(KEY))
