"""A bind refused for its credentials, over a real socket, ends up where
``billgw audit`` (another process) reads it: the sms_link_health row."""
import time

import pytest
import pytest_twisted

from billgw.gateway.audit.sms_health import load_sms_health, sms_health_findings
from billgw.sms.health import LinkHealthRecorder, link_name
from billgw.sms.smpp_link import LinkState
from billgw.sms.smsc_sim import RefuseBindSMSC

from conftest import SYSTEM_ID, TIMEOUT


@pytest.mark.allow_errors  # smpp.bind_refused is logged at error level, on purpose: the alert
@pytest_twisted.inlineCallbacks
def test_a_refused_bind_is_recorded_and_reported_by_the_audit(reactor, smsc_factory, make_link, sync_pool):
    port, smsc = yield smsc_factory(RefuseBindSMSC)
    link = make_link(port.getHost().port)
    recorder = LinkHealthRecorder(run_in_db=sync_pool.run, link=link, clock=reactor, owner="gw:1",
                                  name=link_name(SYSTEM_ID, "127.0.0.1", port.getHost().port), interval=0.05)
    recorder.startService()
    try:
        yield link.wait_for_state(LinkState.REFUSED).addTimeout(TIMEOUT, reactor)
        yield recorder.poll()
        snapshot = load_sms_health(sync_pool.engine, now=time.time(), queued_alert_after=900)
    finally:
        recorder._loop.stop()  # keep the REFUSED row: the gateway stays up, refused
    [finding], _ = sms_health_findings(snapshot, now=time.time(), queued_alert_after=900)
    assert finding.category == "sms_bind_refused"
    assert finding.details["last_bind_status"] == 0x0E and len(smsc.binds) == 1
