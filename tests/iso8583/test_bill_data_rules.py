"""F48 for the bill rules: several BL tags, a bill's surcharge in BD, SG, BP."""
import pytest

from billgw.iso8583.bill_data import (
    BillDataError,
    BillLine,
    BillPaid,
    BillRequestData,
    BillResponseData,
    fit_paid,
)


def test_several_bl_tags_are_kept_in_order():
    tlv = "BC003TELSC006MOBILEBN0100791234567BL003B-2BL003B-1LG002en"
    data = BillRequestData.from_tlv(tlv)
    assert data.bill_number == "B-2" and data.named_bills == ("B-2", "B-1")
    assert data.to_tlv() == tlv


def test_one_bl_tag_is_the_bill_number_as_before():
    data = BillRequestData.from_tlv("BC003TELSC006MOBILEBN0100791234567BL003B-1")
    assert data.bill_number == "B-1" and data.bill_numbers == () and data.named_bills == ("B-1",)
    assert BillRequestData.from_tlv("BC003TELSC006MOBILEBN0100791234567").named_bills == ()


def test_surcharge_and_bills_paid_round_trip():
    data = BillResponseData(due_amount=19_500, surcharge=263,
                            bills=(BillLine("B-1", 12_500, "20261101", 263), BillLine("B-2", 7_000, "20261201")),
                            paid=(BillPaid("B-1", 12_763, 263),))
    tlv = data.to_tlv()
    assert tlv == ("DA00519500SG003263BD022B-1|12500|20261101|263BD017B-2|7000|20261201"
                   "BP013B-1|12763|263")
    assert BillResponseData.from_tlv(tlv) == data


@pytest.mark.parametrize("value", ["BD|B-1|12500|20261101|x", "BD|B-1|12500|20261101|1|2", "BP|B-1|12763",
                                   "BP|B-1|12763|-1", "BP|B-1|x|0"])
def test_malformed_bd_and_bp_are_format_errors(value):
    tag, _, rest = value.partition("|")
    with pytest.raises(BillDataError, match=f"tag {tag}"):
        BillResponseData.from_tlv(f"{tag}{len(rest):03d}{rest}")


def test_fit_paid_keeps_the_first_bills_that_fit():
    data = BillResponseData(receipt_number="R" * 32, paid=tuple(BillPaid(f"BILL-{i:025d}", 1_000, 0)
                                                               for i in range(40)))
    fitted = fit_paid(data)
    assert fitted.size() <= 999 < data.size()
    assert fitted.paid == data.paid[:len(fitted.paid)] and len(fitted.paid) > 10
