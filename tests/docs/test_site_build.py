"""The API reference site builds strictly and documents every public name."""

from __future__ import annotations

import re

from docs_helpers import build_site

import classbalanced as cb


def test_every_public_name_is_documented_with_its_docstring(site):
    api = (site / "api.html").read_text()
    for name in cb.__all__:
        assert f'id="classbalanced.{name}"' in api, name
    # formulas are rendered to MathML at build time, not left as TeX source
    section = api[
        api.index('id="class-balanced-losses"') : api.index('id="classbalanced.ClassBalancedLoss"')
    ]
    assert "<math" in section and "\\sum" not in section and "$$" not in section
    # docstring content reaches the page: shapes, arguments and the doctest example
    start = api.index('id="classbalanced.effective_number"')
    entry = api[start : api.index('id="classbalanced.class_balanced_weights"')]
    assert "samples_per_class" in entry and "(C,)" in entry
    assert "effective_number([1, 10, 100], beta=0.9)" in re.sub(r"<[^>]+>", "", entry)


def test_markdown_docs_are_pages(site):
    for page in (
        "training",
        "beyond",
        "reliability",
        "benchmarks",
        "reproduction",
        "architecture",
        "which_loss",
    ):
        assert (site / f"{page}.html").is_file(), page
    index = (site / "index.html").read_text()
    assert 'href="which_loss.html"' in index and 'href="api.html"' in index


def test_theme_has_a_table_of_contents_per_page_and_light_and_dark_modes(site):
    page = (site / "training.html").read_text()
    # furo's "On this page" table of contents, listing the page's own sections
    toc = page[page.index('<div class="toc-tree">') :]
    toc = toc[: toc.index("</div>")]
    assert 'href="#large-scale-and-several-gpus-torchrun-ddp"' in toc
    assert 'href="#datasets"' in toc and "On this page" in page
    # light and dark: the toggle, and both colour schemes in the stylesheet
    assert 'class="theme-toggle"' in page
    css = (site / "_static" / "styles" / "furo.css").read_text()
    assert "body[data-theme=dark]" in css and "body[data-theme=light]" in css
    assert "prefers-color-scheme:dark" in css.replace(" ", "")  # follows the system's


def test_broken_reference_missing_name_and_empty_entry_fail_the_build(docs_copy, tmp_path):
    which = docs_copy / "which_loss.md"
    which.write_text(which.read_text() + "\nSee {func}`classbalanced.no_such_function`.\n")
    api = docs_copy / "api.md"
    text = api.read_text()
    assert ".. autofunction:: positive_counts\n" in text
    described = "   The focal exponent every focal loss of this package defaults to: ``1.0``.\n"
    assert described in text
    api.write_text(text.replace(".. autofunction:: positive_counts\n", "").replace(described, ""))
    result = build_site(docs_copy, tmp_path / "out")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "classbalanced.no_such_function" in log and "not found" in log
    assert "classbalanced.positive_counts (in classbalanced.__all__) is missing" in log
    assert "classbalanced.DEFAULT_GAMMA has no docstring" in log
