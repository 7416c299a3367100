"""Test-run settings: notebooks in fast mode; the names the docstring examples in vaeflows/ use.

The notebooks (run by nbmake in a kernel that inherits this environment) and the examples read
``VAEFLOWS_FAST``: the test run shrinks their epochs and data unless it is already set (set it to
0 to run the notebooks' full mode under pytest). A person opening a notebook gets full mode.
"""

import os

os.environ.setdefault("VAEFLOWS_FAST", "1")

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(torch=torch, pyro=pyro, dist=dist)
