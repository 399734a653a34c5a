"""The benchmark's baseline: the least a server can do with our wire.

It frames, decodes and encodes exactly what the gateway does -- the same
pyiso8583 spec, framing and F48 codec -- and approves every request at once,
with no journal, no biller and no SMS.  On a given machine its throughput is
the practical ceiling of any server speaking this dialect in Python on one
reactor, so the benchmark reports the gateway as a ratio of it, measured in
the same run.  Never a gateway: it approves everything and remembers nothing.

    atm-sim baseline-server --listen tcp:9583:interface=127.0.0.1
"""
from __future__ import annotations

import itertools
import uuid

from twisted.internet.protocol import Factory, Protocol

from billgw.iso8583.bill_data import BillResponseData
from billgw.iso8583.framing import Framer, FramingError, encode_frame
from billgw.iso8583.messages import MessageFormatError, NetworkRequest, decode_request


class BaselineProtocol(Protocol):
    def __init__(self, factory: "BaselineFactory"):
        self.factory = factory
        self.framer = Framer(factory.framing, factory.max_frame)

    def dataReceived(self, data: bytes):
        try:
            frames = self.framer.feed(data)
        except FramingError:
            self.transport.loseConnection()
            return
        for payload in frames:
            try:
                request = decode_request(payload)
            except MessageFormatError:
                continue
            if isinstance(request, NetworkRequest):
                response = request.respond("00")
            elif request.mti == "0200":
                # As large as the gateway's approval: a reference, a receipt,
                # an authorisation code and a settlement date.
                receipt = f"BR{next(self.factory.receipts):010d}"
                response = request.respond_bill(
                    "00", bill=BillResponseData(receipt_number=receipt, payment_reference=uuid.uuid4().hex),
                    auth_code="000001", settlement_date="1202")
            else:  # 0220, 0420: acknowledged
                response = request.respond("00")
            self.transport.write(encode_frame(response.encode(), self.factory.framing))


class BaselineFactory(Factory):
    noisy = False

    def __init__(self, framing: str = "binary2", max_frame: int = 4096):
        self.framing = framing
        self.max_frame = max_frame
        self.receipts = itertools.count(1)

    def buildProtocol(self, addr):
        return BaselineProtocol(self)
