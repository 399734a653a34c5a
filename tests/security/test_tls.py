"""TLS on the ISO listener over real loopback sockets, with certificates the
test makes: plain TLS, mutual TLS naming the peer by its certificate's
subject, clients without a trusted certificate, and the configuration."""
import datetime as dt
import tomllib

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int16StringReceiver

from billgw.gateway.config import ConfigError, TlsSettings, parse_settings
from billgw.gateway.peers import PeerTable, make_peer
from billgw.gateway.service import ListenerService
from billgw.gateway.tls import TLSServerEndpoint, server_options
from billgw.iso8583.messages import decode_response

from security_wire import gateway, payment, sign_on

pytestmark = pytest.mark.timeout(30)
WAIT = 10  # seconds any single wait may take


def _name(cn, org="Test"):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


class Authority:
    """A throw-away CA issuing the server's and the clients' certificates."""

    def __init__(self, cn="billgw test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(cn)
        self.cert = self._build(self.name, self.key.public_key(), ca=True)

    def _build(self, subject, public_key, *, ca=False, san=None):
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue(self, subject, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        return key, self._build(subject, key.public_key(), san=san)


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    import ipaddress
    d = tmp_path_factory.mktemp("pki")
    ca = Authority()
    server_key, server_cert = ca.issue(_name("gateway.test"), san=[x509.DNSName("localhost"),
                                                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    (d / "ca.pem").write_bytes(_pem(ca.cert))
    (d / "server.pem").write_bytes(_pem(server_cert))
    (d / "server.key").write_bytes(_key_pem(server_key))
    clients = {}
    for who, subject in {"a": _name("switch-a", "Bank A"), "c": _name("switch-c", "Bank C")}.items():
        key, cert = ca.issue(subject)
        clients[who] = ssl.PrivateCertificate.loadPEM(_key_pem(key) + _pem(cert))
    rogue_ca = Authority("rogue CA")
    key, cert = rogue_ca.issue(_name("switch-a", "Bank A"))  # the right subject, the wrong CA
    clients["rogue"] = ssl.PrivateCertificate.loadPEM(_key_pem(key) + _pem(cert))
    return {"dir": d, "ca": ssl.Certificate.loadPEM(_pem(ca.cert)), "clients": clients,
            "settings": TlsSettings(str(d / "server.pem"), str(d / "server.key"), str(d / "ca.pem"))}


class Collector(Int16StringReceiver):
    def connectionMade(self):
        self.answers = []
        self.waiting = []
        self.lost = defer.Deferred()

    def stringReceived(self, data):
        self.answers.append(decode_response(data))
        while self.waiting and len(self.answers) >= self.waiting[0][0]:
            self.waiting.pop(0)[1].callback(self.answers)

    def answer_count(self, n):
        d = defer.Deferred()
        if len(self.answers) >= n:
            d.callback(self.answers)
        else:
            self.waiting.append((n, d))
        return d.addTimeout(WAIT, reactor)

    def connectionLost(self, reason=None):
        self.lost.callback(None)


async def _listen(factory, options):
    endpoint = TLSServerEndpoint(serverFromString(reactor, "tcp:0:interface=127.0.0.1"), options)
    return await endpoint.listen(factory)


async def _connect(port, pki, client=None):
    options = ssl.optionsForClientTLS("localhost", trustRoot=pki["ca"], clientCertificate=client)
    endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=WAIT))
    return await endpoint.connect(Factory.forProtocol(Collector))


BANK_A = make_peer("bank-a", sources=[], certificate_subject="CN=switch-a, O=Bank A", acquirers=["123456"],
                   terminals=["ATM[0-9]{5}"])
BANK_B = make_peer("bank-b", sources=["127.0.0.1"], certificate_subject="CN=switch-b,O=Bank B",
                   acquirers=["654321"], terminals=["B[0-9]{7}"])


@pytest_twisted.ensureDeferred
async def test_mutual_tls_names_the_peer_by_its_certificate(pki):
    factory, processor, _ = gateway(peers=PeerTable([BANK_A, BANK_B]), clock=reactor,
                                    tls_client_certificates=True)
    port = await _listen(factory, server_options(pki["settings"]))
    try:
        proto = await _connect(port, pki, pki["clients"]["a"])
        proto.sendString(sign_on())
        proto.sendString(payment(stan="000002"))
        proto.sendString(payment(stan="000003", acquirer="654321", terminal="B0000001"))  # bank-b's
        answers = await proto.answer_count(2)
        assert [(a.mti, a.fields["11"], a.response_code) for a in answers] == [
            ("0810", "000001", "00"), ("0210", "000003", "58")]
        assert [(r.fields["11"], r.fields["32"]) for r, _ in processor.pending] == [("000002", "123456")]
        assert factory.peer_connections["bank-a"] == 1
        proto.transport.loseConnection()
        await proto.lost
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_trusted_certificate_of_no_peer_is_refused_after_the_handshake(pki):
    factory, processor, _ = gateway(peers=PeerTable([BANK_A, BANK_B]), clock=reactor,
                                    tls_client_certificates=True)
    port = await _listen(factory, server_options(pki["settings"]))
    try:
        proto = await _connect(port, pki, pki["clients"]["c"])
        proto.sendString(sign_on())
        await defer.Deferred.addTimeout(proto.lost, WAIT, reactor)
        assert proto.answers == [] and processor.pending == []
        assert factory.counters["unknown_peer"] == 1 and factory.connections == 0
    finally:
        await port.stopListening()


@pytest.mark.parametrize("client", [None, "rogue"])
@pytest_twisted.ensureDeferred
async def test_no_client_certificate_or_an_untrusted_one_gets_nothing(pki, client):
    factory, processor, _ = gateway(peers=PeerTable([BANK_A]), clock=reactor, tls_client_certificates=True)
    port = await _listen(factory, server_options(pki["settings"]))
    try:
        proto = await _connect(port, pki, pki["clients"].get(client))
        proto.sendString(sign_on())
        await defer.Deferred.addTimeout(proto.lost, WAIT, reactor)
        assert proto.answers == [] and processor.pending == []
        await _until(lambda: factory.connections == 0)
        assert factory.counters["tls_handshake_failed"] == 1
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_server_only_tls_with_peers_by_address(pki):
    settings = TlsSettings(pki["settings"].certificate, pki["settings"].private_key)
    local = make_peer("local", sources=["127.0.0.0/8"], acquirers=["123456"], terminals=["ATM[0-9]{5}"])
    factory, processor, _ = gateway(peers=PeerTable([local]), clock=reactor)
    # As the gateway's service builds it (gateway/service.py).
    service = ListenerService(reactor, "tcp:0:interface=127.0.0.1", factory, tls=server_options(settings))
    port = await service.listen()
    try:
        proto = await _connect(port, pki)
        proto.sendString(sign_on())
        proto.sendString(payment())
        answers = await proto.answer_count(1)
        assert answers[0].response_code == "00"
        await _until(lambda: processor.pending)
        proto.transport.loseConnection()
        await proto.lost
    finally:
        await port.stopListening()


async def _until(condition):
    from twisted.internet.task import deferLater
    for _ in range(WAIT * 20):
        if condition():
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError("condition not reached in time")


@pytest_twisted.ensureDeferred
async def test_a_plain_tcp_client_on_a_tls_listener_gets_nothing(pki):
    factory, processor, _ = gateway(peers=PeerTable([BANK_A]), clock=reactor, tls_client_certificates=True,
                                    frame_timeout=0.5, idle_timeout=5)
    port = await _listen(factory, server_options(pki["settings"]))
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=WAIT)
        proto = await endpoint.connect(Factory.forProtocol(Collector))
        proto.sendString(sign_on())  # not a TLS ClientHello
        await defer.Deferred.addTimeout(proto.lost, WAIT, reactor)
        assert proto.answers == [] and processor.pending == []
    finally:
        await port.stopListening()


def _conf(pki, tls="", peer=""):
    d = pki["dir"]
    text = f"""
[gateway]
listen = "tcp:0:interface=127.0.0.1"
{tls}
[peers.a]
acquirers = ["123456"]
terminals = ["ATM[0-9]{{5}}"]
{peer}
"""
    return tomllib.loads(text.replace("DIR", str(d)))


def test_tls_configuration(pki):
    tls = '[gateway.tls]\ncertificate = "DIR/server.pem"\nprivate_key = "DIR/server.key"\nclient_ca = "DIR/ca.pem"\n'
    settings = parse_settings(_conf(pki, tls, 'certificate_subject = "CN=switch-a,O=Bank A"'), environ={})
    assert settings.listener.tls.client_ca.endswith("ca.pem")
    assert settings.peers.peers[0].certificate_subject == "CN=switch-a,O=Bank A"  # sorted attributes
    assert settings.peers.by_certificate
    with pytest.raises(ConfigError, match="peers.a.certificate_subject: needs .gateway.tls. with client_ca"):
        parse_settings(_conf(pki, "", 'certificate_subject = "CN=switch-a"'), environ={})
    with pytest.raises(ConfigError, match="peers.a.sources: a peer needs at least one address range or a "):
        parse_settings(_conf(pki, tls, ""), environ={})
    with pytest.raises(ConfigError, match="gateway.tls.client_ca: no such file"):
        parse_settings(_conf(pki, tls.replace("ca.pem", "nothing.pem"), 'sources = ["127.0.0.1"]'), environ={})
    with pytest.raises(ConfigError, match="certificate_subject: 'not a name' is not an RFC 4514 name"):
        parse_settings(_conf(pki, tls, 'certificate_subject = "not a name"'), environ={})
    bad = TlsSettings(str(pki["dir"] / "ca.pem"), str(pki["dir"] / "ca.pem"))
    with pytest.raises(ConfigError, match="gateway.tls.certificate"):
        server_options(bad)


@pytest_twisted.ensureDeferred
async def test_the_gateway_composed_from_configuration_speaks_mutual_tls(pki, tmp_path):
    """[gateway.tls] and a peer by certificate, through GatewayService."""
    from twisted.internet.threads import deferToThread

    from billgw.gateway.db import make_engine
    from billgw.gateway.migrate import upgrade
    from billgw.gateway.service import GatewayService

    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    engine = make_engine(url, 1)
    await deferToThread(upgrade, engine)
    engine.dispose()
    tls = '[gateway.tls]\ncertificate = "DIR/server.pem"\nprivate_key = "DIR/server.key"\nclient_ca = "DIR/ca.pem"\n'
    data = _conf(pki, tls, 'certificate_subject = "O=Bank A, CN=switch-a"')
    data["database"] = {"url": url, "auto_upgrade": False}
    data["sms"] = {"enabled": False}
    gw = GatewayService(parse_settings(data, environ={}), reactor, environ={})
    listening = await defer.Deferred.addTimeout(gw.start(), WAIT, reactor)
    try:
        proto = await _connect(listening, pki, pki["clients"]["a"])
        proto.sendString(sign_on())
        [answer] = await proto.answer_count(1)
        assert (answer.mti, answer.response_code) == ("0810", "00")
        assert gw.listener.health()["peer_connections"] == {"a": 1}
        proto.transport.loseConnection()
        await proto.lost
        stranger = await _connect(listening, pki, pki["clients"]["c"])
        await defer.Deferred.addTimeout(stranger.lost, WAIT, reactor)
        assert gw.listener.health()["refusals"] == {"unknown_peer": 1}
    finally:
        await defer.Deferred.addTimeout(gw.stop(), WAIT, reactor)
