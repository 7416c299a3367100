"""The vaeflows API reference's pages, written from each public module's ``__all__``.

* :func:`public_modules` finds every package under ``vaeflows/`` and every module directly in
  ``vaeflows/`` (``vaeflows.distributions``, ``vaeflows.cli``, ...), skipping ``_private`` ones;
  :func:`write_api_pages` writes one page per module into ``docs/api/`` (git-ignored) with an
  ``autosummary`` table of exactly its ``__all__``, whose ``:toctree:`` makes autosummary generate
  one page per name. A name added to ``__all__`` therefore appears in the reference at the next
  build, with no edit to the docs; a module without ``__all__`` stops the build.
* :func:`copy_benchmark_reports` copies ``benchmarks/*.md`` and ``benchmarks/results/`` (its
  reports and their pictures) into ``docs/benchmarks/`` (git-ignored) before every build. A
  symlink would keep one copy too, but Sphinx resolves symlinks, so the reports' relative links
  (``results/x.md``, the README's ``benchmarks/RESULTS.md``) would point outside the docs.
  The notebooks stay a committed symlink: they link nowhere, and they must run in ``notebooks/``.

Plain Python (no Sphinx import), so ``tests/test_docs.py`` checks the pages without a build.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
from pathlib import Path
from typing import Dict, List

API_DIR = "api"
REPO = Path(__file__).resolve().parents[2]
BENCHMARK_FILES = ("*.md", "results/*.md", "results/*.png")


def public_modules() -> List[str]:
    """``vaeflows``, its packages (at any depth) and its top-level modules, sorted."""
    import vaeflows

    names = ["vaeflows"]
    for info in pkgutil.walk_packages(vaeflows.__path__, "vaeflows."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts):
            continue
        if info.ispkg or len(parts) == 2:
            names.append(info.name)
    return sorted(names)


def public_api() -> Dict[str, List[str]]:
    """Each public module's ``__all__``, in its own order."""
    api = {}
    for name in public_modules():
        module = importlib.import_module(name)
        if not hasattr(module, "__all__"):
            raise RuntimeError(f"{name} has no __all__: the API reference lists each module's __all__")
        api[name] = list(module.__all__)
    return api


def api_page(module: str, names: List[str]) -> str:
    """The reST of one module's page: its docstring, then an autosummary table of ``names``."""
    title = f"``{module}``"
    lines = [
        f".. This page is written by docs/_ext/vaeflows_api.py from {module}.__all__ at every build.",
        "",
        title,
        "=" * len(title),
        "",
        f".. automodule:: {module}",
        "   :no-members:",
        "",
        f".. currentmodule:: {module}",
        "",
        ".. autosummary::",
        "   :toctree: generated",
        "   :nosignatures:",
        "",
    ]
    lines += [f"   {name}" for name in names]
    return "\n".join(lines) + "\n"


def write_api_pages(srcdir: str) -> List[Path]:
    """Write ``srcdir/api/<module>.rst`` for every public module; remove pages of gone modules."""
    folder = Path(srcdir) / API_DIR
    folder.mkdir(exist_ok=True)
    written = []
    for module, names in public_api().items():
        path = folder / f"{module}.rst"
        text = api_page(module, names)
        if not path.exists() or path.read_text() != text:  # unchanged pages keep their mtime
            path.write_text(text)
        written.append(path)
    for stale in set(folder.glob("vaeflows*.rst")) - set(written):
        stale.unlink()
    return written


def copy_benchmark_reports(srcdir: str) -> List[Path]:
    """Mirror ``benchmarks/{*.md,results/*.md,results/*.png}`` into ``srcdir/benchmarks/``."""
    source, target = REPO / "benchmarks", Path(srcdir) / "benchmarks"
    wanted = {path.relative_to(source) for pattern in BENCHMARK_FILES for path in source.glob(pattern)}
    for rel in sorted(wanted):
        src, dst = source / rel, target / rel
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    for path in sorted(target.rglob("*")):
        if path.is_file() and path.relative_to(target) not in wanted:
            path.unlink()
    return [target / rel for rel in sorted(wanted)]
