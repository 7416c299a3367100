"""Every guide test starts from an empty Pyro param store.

Autoguides register their parameters under fixed names (``AutoFlow.loc``, ...); a store left
over from an earlier test would hand a new guide parameters of another model's shape.
"""

import pyro
import pytest


@pytest.fixture(autouse=True)
def _empty_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
