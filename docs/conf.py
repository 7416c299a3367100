"""Sphinx configuration of the vaeflows documentation (docs/README.md says how to build it)."""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

# The notebooks run at build time in their fast mode (their first cells read VAEFLOWS_FAST; the
# kernels inherit this environment). VAEFLOWS_FAST=0 builds the full runs instead.
os.environ.setdefault("VAEFLOWS_FAST", "1")
# One torch thread per kernel: on a shared 2-core machine two threads fighting over these small
# tensors made notebook 3 take 115 s instead of 25 s (measured).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import vaeflows  # noqa: E402

project = "vaeflows"
author = "the vaeflows developers"
copyright = "the vaeflows developers"
release = version = vaeflows.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "vaeflows_docs",  # API pages from __all__; the CLI's --help; MathJax in _static (offline)
]

# Sources: the guide pages here; the notebooks through the committed symlink notebooks ->
# ../notebooks; the benchmark reports copied into benchmarks/ and the API pages written into api/
# at every build (both git-ignored; docs/_ext/vaeflows_api.py says why a copy).
exclude_patterns = ["_build", "README.md", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# Docstrings: Google style (napoleon); signatures keep their annotations.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autosummary_generate = True
autosummary_ignore_module_all = False

# MyST: $...$ / $$...$$ maths in the notebooks, ``{include}`` of README sections.
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
# The README's sections are included below page titles of their own, so an included "###"
# can follow a page's "#": docutils nests them correctly; MyST would warn about the jump.
suppress_warnings = ["myst.header"]

# Notebooks: executed at every build (never from a stale cache), each cell within the limit;
# an error in any cell fails the build. The stored notebooks are not modified.
nb_execution_mode = os.environ.get("VAEFLOWS_DOCS_EXECUTE", "force")
nb_execution_timeout = int(os.environ.get("VAEFLOWS_DOCS_CELL_TIMEOUT", "300"))
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_merge_streams = True

html_theme = "furo"
html_title = f"vaeflows {release}"
html_show_sourcelink = False
html_copy_source = False  # the .md and .ipynb sources are in the repository
