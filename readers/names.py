"""The built-in reader formats' names, in detection and listing order.

A module of its own, with no imports, so that the command line can name the formats in its
``--help`` texts without loading the adapters (and pyarrow) first.
"""

BUILTIN_FORMATS: tuple[str, ...] = ("card", "nfc", "wearable", "ssc", "qr")
