"""SOAP 1.1 envelopes and faults: bytes in, elements out, and back.  No I/O.

Shared by the SOAP adapters and the biller simulators so that both sides agree
on the envelope, while each keeps its own operation-level encoding.  Parsing
goes through defusedxml with DTDs forbidden: a biller (or a client of our
simulator) is a peer we do not control, and the stdlib parsers would expand
entity declarations ("billion laughs") or fetch external ones.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
CONTENT_TYPE = b"text/xml; charset=utf-8"

# Readable prefixes in wire dumps and audit logs; the namespace, not the
# prefix, is what the other side checks.
ET.register_namespace("soap", SOAP_ENV_NS)

# An envelope is a handful of small elements; anything larger is not a bill
# payment message and is refused before it is parsed.
MAX_ENVELOPE_BYTES = 256 * 1024


class SoapDecodeError(ValueError):
    """The bytes are not a usable SOAP envelope (garbage, hostile, or truncated)."""


@dataclass(frozen=True)
class SoapFault:
    """A SOAP 1.1 fault with the biller's detail code.

    ``fault_code`` is the SOAP-level class (``Client``: the request was
    refused; ``Server``: the biller failed); ``code`` is the detail code the
    integration spec defines (``INVALID_AMOUNT``...).
    """

    fault_code: str
    fault_string: str
    code: str
    message: str = ""


def qname(namespace: str, local: str) -> str:
    """ElementTree's ``{namespace}local`` spelling."""
    return f"{{{namespace}}}{local}"


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def namespace_of(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def sub_text(parent: ET.Element, namespace: str, local: str, text: str) -> ET.Element:
    """Append ``<ns:local>text</ns:local>`` to ``parent``."""
    child = ET.SubElement(parent, qname(namespace, local))
    child.text = text
    return child


def child_text(parent: ET.Element, namespace: str, local: str, *, required: bool = True) -> str | None:
    """Text of the direct child ``ns:local``; raise SoapDecodeError when a
    required child is missing, so a half-understood message is never used."""
    child = parent.find(qname(namespace, local))
    if child is None:
        if required:
            raise SoapDecodeError(f"missing element {local}")
        return None
    return (child.text or "").strip()


def child_int(parent: ET.Element, namespace: str, local: str) -> int:
    """A required integer child (amounts in minor units)."""
    text = child_text(parent, namespace, local)
    if not text or not text.lstrip("-").isdigit():
        raise SoapDecodeError(f"element {local} is not an integer: {text!r}")
    return int(text)


def build_envelope(body_content: ET.Element) -> bytes:
    """Wrap one element in ``soap:Envelope/soap:Body`` and serialise it (UTF-8)."""
    envelope = ET.Element(qname(SOAP_ENV_NS, "Envelope"))
    body = ET.SubElement(envelope, qname(SOAP_ENV_NS, "Body"))
    body.append(body_content)
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)


def build_fault_envelope(fault: SoapFault, detail_namespace: str) -> bytes:
    """A SOAP 1.1 fault whose detail carries ``<BillingFault><Code/><Message/>``."""
    element = ET.Element(qname(SOAP_ENV_NS, "Fault"))
    # SOAP 1.1: faultcode/faultstring/detail are unqualified.
    ET.SubElement(element, "faultcode").text = f"soap:{fault.fault_code}"
    ET.SubElement(element, "faultstring").text = fault.fault_string
    detail = ET.SubElement(element, "detail")
    billing_fault = ET.SubElement(detail, qname(detail_namespace, "BillingFault"))
    sub_text(billing_fault, detail_namespace, "Code", fault.code)
    sub_text(billing_fault, detail_namespace, "Message", fault.message)
    return build_envelope(element)


def parse_envelope(data: bytes) -> ET.Element:
    """Return the single element inside ``soap:Body``.

    Raises SoapDecodeError for anything else: oversized input, a DTD or
    entity declaration, malformed XML, a missing Body, an empty Body.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise SoapDecodeError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise SoapDecodeError(f"hostile XML refused: {exc.__class__.__name__}") from exc
    except ET.ParseError as exc:
        raise SoapDecodeError(f"malformed XML: {exc}") from exc
    if root.tag != qname(SOAP_ENV_NS, "Envelope"):
        raise SoapDecodeError(f"root element is {root.tag}, not a SOAP 1.1 Envelope")
    body = root.find(qname(SOAP_ENV_NS, "Body"))
    if body is None or len(body) == 0:
        raise SoapDecodeError("SOAP Body missing or empty")
    return body[0]


def parse_fault(element: ET.Element, detail_namespace: str) -> SoapFault | None:
    """The fault carried by a Body element, or None when it is not a fault.

    A fault without our detail block still counts (code ``""``): the caller
    decides what an unexplained fault means.
    """
    if element.tag != qname(SOAP_ENV_NS, "Fault"):
        return None
    fault_code = local_name((element.findtext("faultcode") or "").strip().rpartition(":")[2])
    fault_string = (element.findtext("faultstring") or "").strip()
    code = message = ""
    billing_fault = element.find(f"detail/{qname(detail_namespace, 'BillingFault')}")
    if billing_fault is not None:
        code = child_text(billing_fault, detail_namespace, "Code", required=False) or ""
        message = child_text(billing_fault, detail_namespace, "Message", required=False) or ""
    return SoapFault(fault_code=fault_code, fault_string=fault_string, code=code, message=message)
