"""Plain, model-based fare arithmetic (SPEC §1, §6 steps 1-3): the obvious twin of the compiled tables."""

from __future__ import annotations

from tariffs.model import NetworkFare, ProductPrice, TariffVersion
from tariffs.registry import Registry
from tariffs.vocab import Mode, Product


def apply_rate(amount: int, bp: int) -> int:
    """SPEC §1: ``floor((amount * (10000 - bp) + 5000) / 10000)``, the discounted amount rounded half up.

    Defined for ``amount >= 0`` and ``0 <= bp <= 10000``; Python ints never overflow, and the
    tariff bounds (fares <= 10 000 000 fen) keep every product inside signed 64 bits, so the
    numba kernels computing this in int64 agree.
    """
    return (amount * (10_000 - bp) + 5_000) // 10_000
