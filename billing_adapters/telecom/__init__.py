"""The telecom biller simulator's parts, one job each.

The adapter is :mod:`billgw.billing_adapters.telecom_soap`; the simulator's
entry point (``listen_telecom_sim``, its command-line options, and every
name below re-exported) is :mod:`billgw.billing_adapters.telecom_sim`.

- :mod:`.ledger`: the biller's business rules on a DB-API cursor, ``now``
  passed in, and the read-only ledger extract ``billgw audit`` reads;
- :mod:`.back_office`: :class:`~.back_office.TelecomSimulator`, which runs
  those rules on its own one-thread pool and hands dataclasses back;
- :mod:`.site`: the SOAP front end (twisted.web), the well-behaved biller;
- :mod:`.faults`: misbehaving billers, one misbehaviour per subclass, and
  the seeded mix of them a chaos run asks for.
"""
