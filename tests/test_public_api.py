"""The public names of every vaeflows module exist, and none of them hides a submodule.

A package attribute named like one of its submodules (``from .sylvester import sylvester``)
replaces the submodule on the package: ``vaeflows.transforms.sylvester`` would then be a
function for ``getattr`` and a module for ``import``, and documentation tools, ``mock.patch``
and ``importlib`` disagree about which one they get.
"""

import importlib
import pkgutil

import pytest

import vaeflows

MODULES = ["vaeflows", *(info.name for info in pkgutil.walk_packages(vaeflows.__path__, "vaeflows."))]
PACKAGES = [name for name in MODULES if hasattr(importlib.import_module(name), "__path__")]


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_exists(name):
    module = importlib.import_module(name)
    missing = [attr for attr in getattr(module, "__all__", ()) if not hasattr(module, attr)]
    assert not missing, f"{name}.__all__ names what {name} does not define: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_no_public_name_shadows_a_submodule(name):
    package = importlib.import_module(name)
    assert hasattr(package, "__all__"), f"{name} has no __all__"
    submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert not submodules & set(package.__all__), f"{name}.__all__ names submodules"
    for sub in submodules:  # an import that rebinds the name (public or not) hides the module too
        attr = getattr(package, sub, None)
        module = importlib.import_module(f"{name}.{sub}")
        assert attr is None or attr is module, f"{name}.{sub} is {attr!r}, not the submodule"
