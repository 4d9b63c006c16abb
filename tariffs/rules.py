"""The fare rules of SPEC §1 and §6 on plain integers, each written once for both pricing tiers.

``tariffs.fares`` (the model tier, which ``clearing.reference`` prices with) and
``clearing.kernels`` (the numba fast path, over ``tariffs.compile``'s tables) call these same
functions, so a rule cannot drift between the slow twin and the fast path. They are plain Python
and this package imports no numba (a tariff command would pay about 0.6 s for it):
``clearing.kernels`` registers each with numba's ``register_jitable``, which returns the function
itself, so that an ``@njit`` caller compiles it in. Arguments and results are integers (int64
inside a kernel); the tariff bounds (amounts at most 10 000 000 fen, rates 0..10000 bp) keep every
intermediate inside signed 64 bits, so both tiers compute the same numbers.

A cached kernel does not notice an edit of this file (numba keys its cache on the kernel's own
source file): after changing a rule, clear ``clearing/__pycache__``'s numba cache files.
"""

from __future__ import annotations

from typing import Protocol

# SPEC §6.4: the kind of a transfer step, as the integer a compiled ``step_kind`` table holds
# (``tariffs.compile.StepKind`` names them).
STEP_FREE = 0  # the transfer is free
STEP_OFF_FEN = 1  # value fen off its step-3 fare
STEP_PAY_RATE = 2  # pays value bp of its base fare, never more than its step-3 fare
STEP_DIFFERENCE = 3  # pays what its step-3 fare exceeds the previous leg's: 扣高免低

# SPEC §6.3: how a product price turns a base fare into the step-3 fare, as the integer a
# compiled ``price_kind`` table holds (``tariffs.compile.PriceKind`` names them).
PRICE_NONE = -1  # no price: the area does not run this mode (a compiled table's padding only)
PRICE_RATE = 0  # value bp off the base fare: apply_rate(base, value)
PRICE_FIXED = 1  # a fixed fare of value fen, never more than the base fare

NO_CAP = -1  # SPEC §6.5: the cap of an honoured product with no daily cap (uncapped)


class DayNumbers(Protocol):
    """Service-day numbers by version: a compiled int32 array, or a list."""

    def __getitem__(self, version: int, /) -> int: ...


def apply_rate(amount: int, bp: int) -> int:
    """SPEC §1: ``floor((amount * (10000 - bp) + 5000) / 10000)``, rounded half up to the fen.

    Defined for ``amount >= 0`` and ``0 <= bp <= 10000``; ``//`` is the mathematical floor in
    Python and in numba alike.
    """
    return (amount * (10_000 - bp) + 5_000) // 10_000


def product_price_fare(kind: int, value: int, base: int) -> int:
    """SPEC §6.3: the step-3 fare of a leg of base fare ``base`` under a product price of ``kind``
    (``PRICE_RATE``: ``value`` bp off; ``PRICE_FIXED``: ``value`` fen, capped by the base fare)."""
    if kind == PRICE_RATE:
        return apply_rate(base, value)
    return min(base, value)


def transfer_step_fare(kind: int, value: int, f: int, base: int, previous_f: int) -> int:
    """SPEC §6.4: the fare of a transfer priced by a step of ``kind`` from its step-3 fare ``f``.

    ``value`` is off_fen's fen or pay_rate's bp (0 otherwise), ``base`` the leg's base fare,
    ``previous_f`` the previous leg's step-3 fare (before its own transfer and cap).
    """
    if kind == STEP_FREE:
        return 0
    if kind == STEP_OFF_FEN:
        return max(0, f - value)
    if kind == STEP_PAY_RATE:  # pays ``value`` bp of its base fare: the rate off is the rest
        return min(f, apply_rate(base, 10_000 - value))
    return max(0, f - previous_f)  # difference: the pair pays the higher step-3 fare


def capped_fare(fare: int, cap: int, spent: int) -> int:
    """SPEC §6.5: ``min(fare, max(0, C - S))``, or ``fare`` when ``cap`` is ``NO_CAP``.

    ``spent`` (S) is the sum of the computed fares of the card's earlier non-penalty legs in the
    same tariff area that service day, whatever their product.
    """
    if cap == NO_CAP:
        return fare
    return min(fare, max(0, cap - spent))


def version_in_force(valid_from: DayNumbers, start: int, stop: int, day: int) -> int:
    """SPEC §6: the version in force on service day ``day`` among versions ``[start, stop)``.

    ``valid_from[v]`` is version v's first service day (a day number), ascending over the
    range: a version prices every day from its ``valid_from`` until the next one's. Returns the
    last v with ``valid_from[v] <= day``, or -1 when none is in force yet.
    """
    found = -1
    for v in range(start, stop):
        if valid_from[v] <= day:
            found = v
    return found
