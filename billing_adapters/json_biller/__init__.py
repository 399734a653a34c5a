"""The generic JSON biller: the bill-pull / payment-notification interface
national bill-payment schemes standardise on (docs/billers.md, "The JSON
biller interface").  A biller joins by implementing that interface; the
gateway needs only a ``[billers.<CODE>]`` table with ``adapter = "json"``.

- :mod:`.codec` -- the messages, pure: dicts and bytes in, interface types out;
- :mod:`.adapter` -- :class:`JsonBillerAdapter` over the shared HTTP transport;
- :mod:`.ledger` -- the simulator's business rules and ledger, in memory;
- :mod:`.sim` -- the simulator, a real HTTP server, with misbehaving variants.
"""
