"""Names the docstring examples in vaeflows/ use without importing them."""

import pyro
import pyro.distributions as dist
import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(torch=torch, pyro=pyro, dist=dist)
