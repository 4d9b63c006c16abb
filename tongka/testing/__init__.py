"""Test support, outside the product's path: the synthetic day generator, the hypothesis
strategies QA imports (``tongka.testing.strategies``, a stable import path), the kernel
registry that drives the equality tests and the benchmarks, the planted risk cases and the
raw-format writers. Nothing in the domain rooms imports it."""
