"""The settlement job the server's worker runs: the ``tongka settle`` use case, its result as
the job's JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tongka.jobs import JobView
from tongka.service.centre import Centre
from tongka.settling import settle


def run_settlement(centre: Centre, job: JobView, progress: Callable[[str], None]) -> dict[str, Any]:
    """Clear the day if it never was (or changed since), settle it, write the payment file."""
    settled = settle(centre.engine, centre.home, job.day, centre.tariffs, reason=job.reason,
                     clear_first=True, progress=progress)
    result = settled.result
    return {
        "day": result.day.isoformat(),
        "run": result.run,
        "entry_id": result.entry_id,
        "reason": str(result.reason),
        "recleared": settled.recleared,
        "positions_sum_fen": sum(result.positions.values()),
        "entry_balance_fen": result.entry_balance,
        "instructions": len(result.instructions),
        "payment_files": [p.name for p in settled.payment_files],
    }
