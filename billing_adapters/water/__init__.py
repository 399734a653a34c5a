"""The water biller: its own relational tables, booked by its own batch.

``mapping`` (table, column and code names from configuration), ``intake``
(the work on those tables), ``adapter`` (the ``water`` adapter kind) and
``sim`` (the biller's tables and batch, with misbehaving variants).
"""
