"""TLS on the ISO 8583 listener, and the client certificate's subject.

With ``[gateway.tls]`` the listener's TCP endpoint is wrapped in TLS
(Twisted's ``TLSMemoryBIOFactory``, what its ``ssl:`` endpoints use inside):
the gateway presents ``certificate`` / ``private_key``; with ``client_ca``
it asks every client for a certificate signed by one of those CAs (mutual
TLS) and refuses the handshake without one (``require_client_certificate``,
default true).  The subject of the certificate a client presented is what a
``[peers.NAME] certificate_subject`` is compared with (gateway/peers.py).

TLS 1.2 is the oldest version accepted.  The files are read when the
gateway starts: a renewed certificate is taken by a restart
(docs/security.md, "Certificate renewal").
"""
from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from .config import ConfigError, TlsSettings
from .peers import subject_of


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"gateway.tls.{key}: cannot read {path} ({exc.strerror})") from None


def _ca_certificates(pem: bytes) -> list[ssl.Certificate]:
    """Every certificate of a PEM bundle (a CA file may hold several)."""
    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker for b in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in b]
    return [ssl.Certificate.loadPEM(b) for b in blocks]


def server_options(settings: TlsSettings) -> ssl.CertificateOptions:
    """The listener's TLS context; ConfigError naming the key if a file is
    not what it should be."""
    try:
        cert = ssl.PrivateCertificate.loadPEM(_read(settings.private_key, "private_key")
                                              + b"\n" + _read(settings.certificate, "certificate"))
    except Exception as exc:  # OpenSSL's errors name no file
        raise ConfigError(f"gateway.tls.certificate: {settings.certificate} and {settings.private_key} "
                          f"are not a PEM certificate and its private key ({type(exc).__name__})") from None
    chain = _ca_certificates(_read(settings.certificate, "certificate"))[1:]
    kwargs = {}
    if settings.client_ca is not None:
        try:
            cas = _ca_certificates(_read(settings.client_ca, "client_ca"))
        except Exception as exc:
            raise ConfigError(f"gateway.tls.client_ca: {settings.client_ca} is not a PEM CA bundle "
                              f"({type(exc).__name__})") from None
        if not cas:
            raise ConfigError(f"gateway.tls.client_ca: {settings.client_ca} holds no certificate")
        kwargs = dict(verify=True, caCerts=[c.original for c in cas],
                      requireCertificate=settings.require_client_certificate)
    return ssl.CertificateOptions(
        privateKey=cert.privateKey.original, certificate=cert.original,
        extraCertChain=[c.original for c in chain],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2, **kwargs)


class _TLSFactory(TLSMemoryBIOFactory):
    """TLS around our factory, which may refuse a connection at accept
    (``buildProtocol`` returning None): then no TLS protocol either."""

    def buildProtocol(self, addr):
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """A server endpoint (tcp:, tcp6:) with TLS added around the factory."""

    def __init__(self, wrapped, options: ssl.CertificateOptions):
        self._wrapped = wrapped
        self._options = options

    def listen(self, factory):
        return self._wrapped.listen(_TLSFactory(self._options, False, factory))


def tls_failure(reason) -> str | None:
    """What went wrong when a connection ended on a TLS error (a failed
    handshake: no certificate, an untrusted one, not TLS at all), else None."""
    if reason is None or not reason.check(SSL.Error):
        return None
    return reason.getErrorMessage()[:300]


def peer_subject(transport) -> str | None:
    """The RFC 4514 subject of the client certificate on ``transport``
    (as peers.subject_of gives it), None without one."""
    get = getattr(transport, "getPeerCertificate", None)
    cert = get() if get is not None else None
    if cert is None:
        return None
    return subject_of(cert.to_cryptography().subject)
