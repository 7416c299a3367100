"""Test-run settings: notebooks in fast mode; the names the docstring examples in vaeflows/ use.

The notebooks (run by nbmake in a kernel that inherits this environment) and the examples read
``VAEFLOWS_FAST``: the test run shrinks their epochs and data unless it is already set (set it to
0 to run the notebooks' full mode under pytest). A person opening a notebook gets full mode.

The suite runs in parallel (pytest-xdist, ``-n auto`` in pyproject's addopts): one worker per core,
each, and the notebook kernels and subprocesses it starts, on one torch thread, so that the workers
do not contend for the cores they already fill.
"""

import os

os.environ.setdefault("VAEFLOWS_FAST", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(torch=torch, pyro=pyro, dist=dist)
