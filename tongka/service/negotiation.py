"""Content negotiation: which offered media type a request's Accept header prefers.

No dependency of the project offers RFC 9110 negotiation (starlette has none), and the rule is
a dozen lines, so it is written here once for every route that answers in several types.
"""

from __future__ import annotations


def negotiate(accept: str | None, offered: tuple[str, ...]) -> str | None:
    """The offered media type ``accept`` prefers (RFC 9110 §12.5.1: the most specific range
    that matches decides an offer's quality; ties go to the first offered); None: none is
    acceptable. No Accept header accepts anything."""
    if accept is None or not accept.strip():
        return offered[0]
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        main, _, sub = media.lower().partition("/")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((main, sub or "*", q))
    best, best_q = None, 0.0
    for offer in offered:
        o_main, _, o_sub = offer.partition("/")
        specificity, quality = -1, 0.0
        for main, sub, q in ranges:
            rank = (2 if (main, sub) == (o_main, o_sub) else 1 if (main, sub) == (o_main, "*")
                    else 0 if (main, sub) == ("*", "*") else -1)
            if rank > specificity:
                specificity, quality = rank, q
        if quality > best_q:
            best, best_q = offer, quality
    return best
