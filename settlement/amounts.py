"""How amounts of money are written for people: yuan with thousands separators, one label.

Statements, the overview and the charts all write amounts through ``yuan`` and label them with
``CURRENCY``, so a reader never meets "(yuan)" on one page and "(CNY)" on the next. Machine
files (the bank payment files) keep their own plain format (``settlement.payments.cny``).
"""

from __future__ import annotations

import operator

CURRENCY = "CNY"  # the one label people read next to an amount


def yuan(fen: int, *, signed: bool = False) -> str:
    """Integer fen as ``1,234,567.89`` by integer arithmetic; a leading ``-`` when negative.

    ``signed`` adds a ``+`` to positive amounts, for columns where the direction matters (net
    positions, mismatches). A float is refused (``TypeError``): no float ever stands for money.
    """
    n = operator.index(fen)  # ints and numpy integers pass, floats do not
    whole, cents = divmod(abs(n), 100)
    sign = "-" if n < 0 else "+" if signed and n > 0 else ""
    return f"{sign}{whole:,}.{cents:02d}"


def yuan_tick(fen: int) -> str:
    """A chart tick: whole yuan without decimals (``1,234``), else as ``yuan`` (``-1.50``)."""
    n = operator.index(fen)
    return f"{n // 100:,}" if n % 100 == 0 else yuan(n)
