"""The README QA section's worked example runs: every ``python`` block there is executed as a test.

The README's QA section shows how to write a property test against the engine's public API;
a worked example that no longer runs would teach the wrong thing, so this file executes the
document's code and calls each ``test_*`` function it defines.
"""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    """Each python block, preceded by as many empty lines as come before it in the README.

    Compiled under the README's name, the code's line numbers must be the README's: hypothesis
    reads a test's source back (``inspect.getsource``) to seed a derandomised run, and from a
    wrong line it would tokenise prose instead of the function.
    """
    text = DOC.read_text(encoding="utf-8")
    return ["\n" * text.count("\n", 0, m.start(1)) + m.group(1)
            for m in re.finditer(r"```python\n(.*?)```", text, re.DOTALL)]


def test_the_qa_guide_has_a_worked_example() -> None:
    assert any("def test_" in block for block in _blocks())


def test_the_worked_example_in_the_qa_guide_passes() -> None:
    namespace: dict = {"__name__": "qa_doc_example"}
    for block in _blocks():
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own document
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert tests
    for test in tests:
        test()
