"""Reader adapters: raw exports of every medium in, canonical taps (SPEC §3) and row errors out.

Entry points: ``readers.registry`` (``get_adapter``, ``detect_format_bytes``,
``adapter_names``, ``format_descriptions``), ``readers.base`` (``Adapter``, whose
``parse_bytes`` parses a file's bytes, and ``ParseResult``), ``readers.config``
(``ReaderConfig``, the keys) and ``tongka.testing.synth`` (``write_raw``, synthetic raw files, which
imports the adapters and never the reverse). docs/formats/ describes each format and every
row error code; docs/pii.md how personal numbers are tokenised.
"""
