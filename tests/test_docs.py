"""The documentation's sources, checked without building the site (docs/README.md builds it).

The API reference lists each public module's ``__all__`` (pages written by
``docs/_ext/vaeflows_api.py``): here every package under ``vaeflows/``, found from the files
themselves, must have a page whose autosummary names every entry of its ``__all__``, each of
which resolves. The guide pages include README sections between marker headings: every marker
must still be in the README, or the build would fail.
"""

import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import vaeflows_api  # noqa: E402


def _packages_on_disk():
    return sorted(
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "vaeflows").rglob("__init__.py")
        if not any(part.startswith("_") for part in init.parent.relative_to(ROOT).parts)
    )


def _listed(page: str):
    """The names of the autosummary block of an API page."""
    block = page.split(".. autosummary::", 1)[1]
    return [line.strip() for line in block.splitlines() if line.startswith("   ") and not line.strip().startswith(":")]


def test_every_package_has_an_api_page(tmp_path):
    written = {path.stem for path in vaeflows_api.write_api_pages(str(tmp_path))}
    assert set(_packages_on_disk()) <= written
    top_level = {f"vaeflows.{path.stem}" for path in (ROOT / "vaeflows").glob("*.py") if not path.stem.startswith("_")}
    assert top_level <= written


def test_api_pages_list_every_public_name(tmp_path):
    vaeflows_api.write_api_pages(str(tmp_path))
    pages = {path.stem: path.read_text() for path in (tmp_path / "api").glob("*.rst")}
    for module_name in pages:
        module = importlib.import_module(module_name)
        listed = _listed(pages[module_name])
        assert listed == list(module.__all__), module_name
        for name in listed:
            assert hasattr(module, name), f"{module_name}.__all__ names {name}, which it does not define"


def test_api_pages_of_removed_modules_are_deleted(tmp_path):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "vaeflows.gone.rst").write_text("stale")
    vaeflows_api.write_api_pages(str(tmp_path))
    assert not (tmp_path / "api" / "vaeflows.gone.rst").exists()


INCLUDE = re.compile(r"```\{include\} ([^\n]+)\n((?::[\w-]+: [^\n]*\n)*)```")


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_included_sections_are_found(page):
    for target, options in INCLUDE.findall(page.read_text()):
        text = (page.parent / target).read_text()
        for key, value in re.findall(r":([\w-]+): ([^\n]*)", options):
            if key in ("start-after", "end-before"):
                marker = value.strip().strip('"')
                assert marker in text, f"{page.name}: {key} {marker!r} is not in {target}"
