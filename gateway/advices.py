"""The processor's advices and reversals: recorded durably, then acknowledged.

A 0420/0421 reversal and a 0220/0221 advice are each journaled (with the
work they leave for the biller: a reversal, a status query, an advised
posting) in one transaction before the 0430/0230 goes out; the biller
worker does the work afterwards (gateway/biller_worker.py), so the switch
never waits on a biller for them and a repeat gets the identical answer.

A mixin of :class:`~.processor.TransactionProcessor`, which owns the
journal, the clock, the calendar and the settling context.
"""
from __future__ import annotations

from billgw.iso8583.codes import Outcome
from billgw.iso8583.messages import BillRequest, Response, ReversalRequest

from . import business_day, settle
from .processor_checks import local_check


class Advices:
    """0420/0421 and 0220/0221 (mixin of TransactionProcessor)."""

    async def _reverse(self, request: ReversalRequest, log) -> Response:
        """0420/0421: durable first, then acknowledged; the undoing follows."""
        keys = request.original_keys
        rev = settle.ReversalInput(
            orig_mti=request.original.mti, orig_acquirer_id=keys.acquirer_id,
            orig_terminal_id=keys.terminal_id, orig_stan=keys.stan,
            orig_transmission_dt=keys.transmission_datetime, stan=request.stan,
            transmission_dt=request.transmission_datetime, amount=request.amount,
            currency=request.currency,
            business_date=business_day.as_text(business_day.payment_date(self._calendar, self._clock.seconds())))
        outcome = await self._journal.admit(settle.record_reversal, rev, self._clock.seconds(), self.context,
                                          ack_code=self._code(Outcome.APPROVED))
        log.info("reversal recorded", payment_id=outcome.transaction_id, state=outcome.state,
                 repeat=outcome.repeat, orig_stan=keys.stan)
        if outcome.biller_work:
            self.on_biller_work()
        if outcome.sms_queued:
            self._on_sms_queued()
        return request.respond(outcome.response_code)

    async def _advise(self, request: BillRequest, log) -> Response:
        """0220/0221: the customer was debited; see the payment completed."""
        problem, route, service = local_check(request, self._billers)  # the codec refuses non-payment advices
        new = self._new_transaction(request, service, problem, self._business_floor(route, self._clock.seconds()))

        def respond(code: str):
            response = request.respond_bill(code)
            return response.mti, response.fields

        outcome = await self._journal.admit(
            settle.record_advice, new, self._clock.seconds(), self.context, respond=respond,
            ok_code=self._code(Outcome.APPROVED), mismatch_code=self._code(Outcome.DUPLICATE_TRANSMISSION))
        log.info("advice recorded", payment_id=outcome.transaction_id, repeat=outcome.repeat,
                 biller_work=outcome.biller_work)
        if outcome.biller_work:
            self.on_biller_work()
        if outcome.sms_queued:
            self._on_sms_queued()
        # This message's own echo fields with the stored code: a 0221 gets
        # exactly the answer its 0220 got.
        return request.respond_bill(outcome.response[1]["39"])
