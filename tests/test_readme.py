"""The README's Python example runs as written and its SVI loss goes down."""

import re
from pathlib import Path

import pyro

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_guide_example_runs_and_learns():
    text = README.read_text()
    code = re.search(r"## A flow posterior in your own Pyro guide\n\n```python\n(.*?)```", text, re.S)
    assert code, "the README lost its guide example"
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    namespace = {}
    exec(code.group(1).replace("range(200)", "range(60)"), namespace)
    svi, x = namespace["svi"], namespace["x"]
    losses = [svi.evaluate_loss(x) for _ in range(20)]
    before = sum(losses) / len(losses)
    for _ in range(100):
        svi.step(x)
    after = sum(svi.evaluate_loss(x) for _ in range(20)) / 20
    assert after < before
