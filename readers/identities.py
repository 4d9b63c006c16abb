"""The invented raw identities a writer gives each synthetic tap's card (``Identities``).

It lives apart from ``tongka.testing.synth`` so that the adapters, whose ``render`` takes one, never
import the writers: synth imports the adapters' codecs, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Identities:
    """The invented raw identities of each tap's card, aligned with the taps."""

    asn: np.ndarray  # (n, 20) uint8 ASCII: the card's (or virtual card's) application serial number
    ss_number: np.ndarray  # (n, 18) uint8 ASCII: social-security number (ISO 7064 MOD 11-2)
    wallet: np.ndarray  # (n,) str: the phone wallet's account token
    account: np.ndarray  # (n,) str: the QR code account token
    balance: np.ndarray  # (n,) int64: purse balance after the tap, fen

    def take(self, rows: np.ndarray) -> Identities:
        return Identities(
            self.asn[rows],
            self.ss_number[rows],
            self.wallet[rows],
            self.account[rows],
            self.balance[rows],
        )
