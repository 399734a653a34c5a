"""The electricity biller: a mainframe-style host with fixed-width EBCDIC
records over one persistent TCP link (docs/billers.md, "Electricity").

``fields`` (EBCDIC, zoned, COMP-3) and ``copybook`` (layouts as data) are
pure codecs; ``records`` is the host's copybook; ``answers`` what each answer
means for the money; ``adapter`` the BillerAdapter on the shared
``transports.tcp_records`` link; ``settings`` its schema; ``ledger`` and
``sim`` the host simulator and its misbehaving variants.
"""
