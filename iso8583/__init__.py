"""billgw's ISO 8583 dialect: pure and sans-IO.

Bytes in, typed requests out; typed responses in, bytes out.  Framing
(:mod:`.framing`), the F48 bill-data TLV (:mod:`.bill_data`), the pyiso8583
spec and field usage (:mod:`.spec`), the typed messages (:mod:`.messages`),
outcomes and response codes (:mod:`.codes`) and card-data masking
(:mod:`.masking`).  Nothing here imports Twisted or a database.
"""
