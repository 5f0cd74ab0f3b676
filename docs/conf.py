"""Sphinx configuration of the API reference site.

Build (after ``pip install -e '.[docs]'``)::

    python -m sphinx -W -n --keep-going -b html docs docs/_build/html

Sphinx rather than MkDocs: the docstrings are reStructuredText (``:func:`` roles, Google
"Args:" sections), which autodoc + napoleon render and cross-check natively.
Strictness: ``-W -n`` turns every warning (a broken cross-reference, a page link that does
not resolve) into an error, and the ``build-finished`` check below fails the build when a
name of ``classbalanced.__all__`` is missing from the reference or has no docstring.
Formulas (``$...$`` / ``$$...$$``) are rendered to MathML at build time (latex2mathml), so
the pages need no JavaScript math library and no network.
"""

from __future__ import annotations

import sys
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "docs"))

from _names import importable  # noqa: E402

import classbalanced  # noqa: E402

project = "classbalanced"
author = "classbalanced developers"
release = version = classbalanced.__version__
copyright = "the classbalanced developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_ambiguous"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # no torch.nn.Module boilerplate under forward()
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# furo (maintained, as kornia's docs): a per-page table of contents beside each page,
# light and dark modes (following the system's, with a toggle), search, a mobile layout
html_theme = "furo"
html_title = "classbalanced"
html_show_sourcelink = False
smartquotes = False  # keep "--flag" and quotes as written (CLI docs)
html_theme_options = {"navigation_with_keys": True}

# Offline build: no intersphinx, so names of other libraries in signatures (torch.Tensor,
# numpy.ndarray, typing) are not resolvable; cross-references inside classbalanced are.
nitpick_ignore_regex = [
    ("py:.*", r"(torch|numpy|np|typing|collections|pathlib|os|sklearn)(\..*)?"),
    (
        "py:.*",
        r"(Tensor|ndarray|Sequence|Iterable|Mapping|Callable|Any|Literal|Module|Dataset|Sampler)",
    ),
    ("py:.*", r"(int|float|bool|str|None|tuple|list|dict|object|type)"),
    ("py:.*", r"(ArrayLike|Counts|Optimizer|Parameter|optional)"),
]

_log = logging.getLogger("classbalanced.docs")


def _candidates(node):
    """The documented names a reference inside classbalanced may mean."""
    target = node.get("reftarget", "").lstrip("~.")
    name = target.rsplit(".", 1)[-1]
    out = [target]
    if node.get("py:class"):
        out.append(f"classbalanced.{node['py:class']}.{target}")
    if name in classbalanced.__all__:
        out.append(f"classbalanced.{name}")
    return out


def _public_alias(app, env, node, contnode):
    """Resolve a reference to its documented public name, role-agnostic.

    ``classbalanced.losses.softmax_cross_entropy`` resolves to the documented
    ``classbalanced.softmax_cross_entropy``, ``:meth:`weights``` to the property
    ``RunningClassCounts.weights``. A reference to an existing object of the package that
    the reference does not document (an internal helper) is shown as code without a link.
    Anything else stays unresolved: a warning, which ``-W`` turns into a failed build.
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    for target in _candidates(node):
        if target in domain.objects:
            return domain.resolve_any_xref(
                env, node["refdoc"], app.builder, target, node, contnode
            )[0][1]
    target = node.get("reftarget", "")
    module = node.get("py:module") or "classbalanced"
    owner = f"{module}.{node['py:class']}" if node.get("py:class") else module
    for dotted in (target, f"{module}.{target}", f"{owner}.{target}"):
        if dotted.startswith("classbalanced.") and importable(dotted):
            return contnode
    first = target.split(".")[0]
    for name, mod in list(sys.modules.items()):
        if (
            name.startswith("classbalanced.")
            and hasattr(mod, first)
            and importable(f"{name}.{target}")
        ):
            return contnode
    return None


def _math_to_mathml(self, node):
    from latex2mathml.converter import convert

    display = "block" if isinstance(node, nodes.math_block) else "inline"
    self.body.append(convert(node.astext(), display=display))
    if display == "block":
        self.body[-1] = f'<div class="math">{self.body[-1]}</div>'
    raise nodes.SkipNode


def _check_reference(app, exception):
    """Every name of ``classbalanced.__all__`` on the reference page, with a description."""
    if exception is not None:
        return
    described: dict[str, str] = {}
    for doc in app.env.found_docs:
        for desc in app.env.get_doctree(doc).findall(addnodes.desc):
            text = "".join(c.astext() for c in desc.findall(addnodes.desc_content)).strip()
            for sig in desc.findall(addnodes.desc_signature):
                for ident in sig.get("ids", []):
                    described[ident] = described.get(ident, "") + text
    for name in classbalanced.__all__:
        ident = f"classbalanced.{name}"
        if ident not in described:
            _log.warning("%s (in classbalanced.__all__) is missing from the API reference", ident)
        elif not described[ident]:
            _log.warning("%s has no docstring (empty entry in the API reference)", ident)


def _drop_type_docstring(app, what, name, obj, options, lines):
    """A constant (``DEFAULT_GAMMA = 1.0``) is described on the page, not by ``float.__doc__``."""
    words = " ".join(" ".join(lines).split())
    value = getattr(classbalanced, name.rsplit(".", 1)[-1], obj)  # obj may be a placeholder
    type_doc = " ".join((type(value).__doc__ or "").split())
    if what in ("data", "attribute") and type_doc and words == type_doc:
        lines.clear()


def setup(app):
    app.add_html_math_renderer("mathml", (_math_to_mathml, None), (_math_to_mathml, None))
    app.config.html_math_renderer = "mathml"
    app.connect("missing-reference", _public_alias)
    app.connect("autodoc-process-docstring", _drop_type_docstring)
    app.connect("build-finished", _check_reference)
