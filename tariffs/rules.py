"""The fare rules of SPEC §1 and §6 on plain integers, each written once for both pricing tiers.

``tariffs.fares`` (the model tier, which ``clearing.reference`` prices with) and
``clearing.kernels`` (the numba fast path, over ``tariffs.compile``'s tables) call these same
functions, so a rule cannot drift between the slow twin and the fast path. Each is registered
with numba's ``register_jitable``: called from Python it is the plain function below; called from
an ``@njit`` function numba compiles it into the caller. Arguments and results are integers
(int64 inside a kernel); the tariff bounds (amounts at most 10 000 000 fen, rates 0..10000 bp)
keep every intermediate inside signed 64 bits, so both tiers compute the same numbers.

A cached kernel does not notice an edit of this file (numba keys its cache on the kernel's own
source file): after changing a rule, clear ``clearing/__pycache__``'s numba cache files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from numba.extending import register_jitable

# SPEC §6.4: the kind of a transfer step, as the integer a compiled ``step_kind`` table holds
# (``tariffs.compile.StepKind`` names them).
STEP_FREE = 0  # the transfer is free
STEP_OFF_FEN = 1  # value fen off its step-3 fare
STEP_PAY_RATE = 2  # pays value bp of its base fare, never more than its step-3 fare
STEP_DIFFERENCE = 3  # pays what its step-3 fare exceeds the previous leg's: 扣高免低

NO_CAP = -1  # SPEC §6.5: the cap of an honoured product with no daily cap (uncapped)

_Rule = TypeVar("_Rule", bound=Callable[..., int])


class DayNumbers(Protocol):
    """Service-day numbers by version: a compiled int32 array, or a list."""

    def __getitem__(self, version: int, /) -> int: ...


def _both_tiers(rule: _Rule) -> _Rule:
    """Register ``rule`` with numba (inlined into its jitted callers, as the kernels' own helpers
    are) and return it unchanged, so that Python callers and type checkers see the function."""
    register_jitable(inline="always")(rule)
    return rule


@_both_tiers
def apply_rate(amount: int, bp: int) -> int:
    """SPEC §1: ``floor((amount * (10000 - bp) + 5000) / 10000)``, rounded half up to the fen.

    Defined for ``amount >= 0`` and ``0 <= bp <= 10000``; ``//`` is the mathematical floor in
    Python and in numba alike.
    """
    return (amount * (10_000 - bp) + 5_000) // 10_000


@_both_tiers
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


@_both_tiers
def capped_fare(fare: int, cap: int, spent: int) -> int:
    """SPEC §6.5: ``min(fare, max(0, C - S))``, or ``fare`` when ``cap`` is ``NO_CAP``.

    ``spent`` (S) is the sum of the computed fares of the card's earlier non-penalty legs in the
    same tariff area that service day, whatever their product.
    """
    if cap == NO_CAP:
        return fare
    return min(fare, max(0, cap - spent))


@_both_tiers
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
