"""Sphinx glue for the vaeflows docs (``conf.py`` loads it as an extension).

* At ``config-inited``: the API pages and the benchmark reports (:mod:`vaeflows_api`).
* Data registries re-exported by a package (``vaeflows.density.DENSITY_FLOWS``) get the ``#:``
  comment written where they are defined, not the docstring of ``dict``.
* MathJax 3 served from the site itself (``_static/mathjax``), from the files of the PyPI package
  ``sphinx-mathjax-offline``: that package's own extension does the same but does not declare
  itself safe for parallel reading, which would make ``-j`` builds serial (and warn).
* The ``vaeflows-cli-help`` directive prints ``vaeflows SUBCOMMAND --help`` as the parser itself
  formats it (``vaeflows.cli.build_parser``), so the docs never hold a stale copy of the flags.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pkgutil
from pathlib import Path
from typing import List

from docutils import nodes
from docutils.parsers.rst import Directive
from vaeflows_api import copy_benchmark_reports, write_api_pages

HELP_WIDTH = "80"  # the width of the theme's code blocks


def _defining_comment(module_name: str, obj: object) -> List[str]:
    """The ``#:`` comment of the module-level name bound to ``obj`` in the module or a submodule."""
    from sphinx.pycode import ModuleAnalyzer

    package = importlib.import_module(module_name)
    candidates = [module_name]
    if hasattr(package, "__path__"):
        candidates += [info.name for info in pkgutil.iter_modules(package.__path__, module_name + ".")]
    for candidate in candidates:
        module = importlib.import_module(candidate)
        try:
            docs = ModuleAnalyzer.for_module(candidate).find_attr_docs()
        except Exception:  # no source to read
            continue
        for (scope, name), lines in docs.items():
            if scope == "" and getattr(module, name, None) is obj:
                return list(lines)
    return []


def _data_docstring(app, what, name, obj, options, lines):
    if what != "data" or "." not in name:
        return
    generic = " ".join((type(obj).__doc__ or "").split())
    if lines and " ".join(" ".join(lines).split()) != generic:
        return  # the name has a comment of its own
    lines[:] = _defining_comment(name.rsplit(".", 1)[0], obj)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    raise ValueError(f"vaeflows-cli-help: no subcommand {name!r} under {parser.prog!r}")


class CliHelp(Directive):
    """``.. vaeflows-cli-help:: density train``: the help text of that (sub)command."""

    optional_arguments = 8
    has_content = False

    def run(self):
        from vaeflows.cli import build_parser

        old = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps at the terminal's width
        try:
            parser = build_parser()
            for name in self.arguments:
                parser = _subparser(parser, name)
            text = parser.format_help()
        finally:
            if old is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = old
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def _mathjax_files() -> Path:
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("MathJax for the docs comes from sphinx-mathjax-offline: pip install -e '.[docs]'")
    return Path(spec.origin).parent / "static" / "mathjax"


def _copy_mathjax(app, exception):
    from sphinx.util.fileutil import copy_asset

    if exception is None and app.builder.format == "html":
        copy_asset(str(_mathjax_files()), str(Path(app.outdir) / "_static" / "mathjax"))


def _on_config_inited(app, config):
    _mathjax_files()  # fail early, not after the notebooks ran
    config.mathjax_path = "mathjax/tex-chtml.js"
    write_api_pages(app.srcdir)
    copy_benchmark_reports(app.srcdir)


def setup(app):
    app.connect("config-inited", _on_config_inited)
    app.connect("autodoc-process-docstring", _data_docstring)
    app.connect("build-finished", _copy_mathjax)
    app.add_directive("vaeflows-cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
