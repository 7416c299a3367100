"""The README's Python examples run as written (with fewer steps), print what they promise, and
their SVI loss goes down."""

import contextlib
import io
import math
import re
from pathlib import Path

import pyro

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## A flow guide for your own Pyro model"


def readme_blocks():
    text = README.read_text()
    assert SECTION in text, "the README lost its guide section"
    section = text[text.index(SECTION) :].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run_block(code, **replacements):
    """Execute ``code`` with its loops shortened; return its namespace and the ELBOs it printed."""
    for old, new in replacements.items():
        assert old in code, f"the README example lost {old!r}"
        code = code.replace(old, new)
    namespace, out = {}, io.StringIO()
    pyro.clear_param_store()
    with contextlib.redirect_stdout(out):
        exec(code, namespace)
    elbos = [float(m) for m in re.findall(r"ELBO (-?[0-9.]+)", out.getvalue())]
    return namespace, elbos


def test_readme_autoguide_example_prints_the_elbo_of_each_guide():
    blocks = readme_blocks()
    _, elbos = run_block(blocks[0], **{"range(1500)": "range(30)", "range(100)": "range(5)"})
    assert len(elbos) == 2 and all(math.isfinite(e) for e in elbos)


def test_readme_amortized_example_runs_and_learns():
    blocks = readme_blocks()
    namespace, elbos = run_block(blocks[1], **{"range(1000)": "range(60)", "range(100)": "range(5)"})
    assert len(elbos) == 2 and all(math.isfinite(e) for e in elbos)
    svi, x = namespace["svi"], namespace["x"]  # the flow guide's, trained 60 steps
    before = sum(svi.evaluate_loss(x) for _ in range(20)) / 20
    for _ in range(100):
        svi.step(x)
    after = sum(svi.evaluate_loss(x) for _ in range(20)) / 20
    assert after < before
