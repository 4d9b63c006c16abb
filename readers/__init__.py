"""Reader adapters: raw exports of every medium in, canonical taps (SPEC §3) and row errors out.

Entry points: ``readers.registry`` (``get_adapter``, ``detect_format``, ``adapter_names``),
``readers.base`` (``Adapter``, ``ParseResult``), ``readers.config`` (``ReaderConfig``, the
keys) and ``readers.synth`` (``write_raw``, synthetic raw files). docs/formats/ describes
each format and every row error code; docs/pii.md how personal numbers are tokenised.
"""
