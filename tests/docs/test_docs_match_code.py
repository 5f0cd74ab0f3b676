"""README.md and docs/*.md say what the code does: every ``classbalanced`` command line they
show parses with the real parser, every flag they name exists, every test, file and link
they cite exists, and the README's library example runs as written.

(The ```python blocks of docs/beyond.md run in tests/test_sampling.py; the site build,
which checks the pages' cross-references, in test_site_build.py.)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from classbalanced.cli import build_parser
from classbalanced.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: flags of other programs the pages show (torchrun, sphinx, ray, scancel, pip; the
#: architecture page's generic --x / --no-x)
OTHER_TOOLS_FLAGS = {
    "--standalone", "--nproc_per_node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint",
    "--rdzv-id", "--keep-going", "--head", "--address", "--signal", "--index-url", "--x", "--no-x",
}  # fmt: skip
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
CITED_PATH = re.compile(
    r"(?<![\w/.-])((?:configs|tests|benchmarks|examples|src|docs|\.ci)/[\w./{},-]*\w)"
)


def _code_blocks(text: str, langs: tuple[str, ...]) -> list[str]:
    return [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S) if lang in langs]


def _command_lines(text: str) -> list[str]:
    """The ``classbalanced ...`` lines of the shell blocks (continuations joined, comments cut)."""
    lines = []
    for block in _code_blocks(text, ("bash", "")):
        for line in block.replace("\\\n", " ").splitlines():
            found = re.search(r"(?:^|-m )classbalanced (\S.*)$", line.split(" #")[0].strip())
            if found:
                lines.append(found.group(1).split(" && ")[0])
    return lines


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_documented_command_line_parses(capsys):
    parser = build_parser()
    failures = []
    for page in PAGES:
        for line in _command_lines(page.read_text()):
            try:
                parser.parse_args(shlex.split(line))
            except SystemExit:
                failures.append(f"{page.name}: classbalanced {line}: {capsys.readouterr().err}")
    assert not failures, "\n".join(failures)


def _known_flags() -> set[str]:
    flags = set(OTHER_TOOLS_FLAGS)
    for sub in _subparsers(build_parser()).values():
        for action in sub._actions:
            flags.update(action.option_strings)
    for script in (ROOT / "benchmarks").glob("*.py"):  # their parsers are built inside main()
        for name in re.findall(r"\"(--[a-z][a-z0-9-]*)\"", script.read_text()):
            flags.update({name, "--no-" + name[2:]})
    return flags


def test_every_flag_the_docs_name_exists():
    known = _known_flags()
    unknown = [
        f"{page.name}: {flag}"
        for page in PAGES
        for flag in sorted(set(FLAG.findall(page.read_text())))
        if flag not in known and flag.replace("--no-", "--") not in known
    ]
    assert not unknown, unknown


def _tests_cited(line: str):
    """``(file or None, test name or None, parameter id or None)`` of each backticked
    ``tests/x.py::test_y[id]``, ``::test_y`` (same file as before on the line) or ``test_y``
    (not a config key such as ``test_data``)."""
    file = None
    for token in re.findall(r"`([^`]+)`", line):
        found = re.fullmatch(
            r"((?:[\w/]+/)?test_\w+\.py)?(?:::)?(test_\w+|\.\.\.)?(\[[^\]]*\])?", token
        )
        if found and any(found.groups()) and token not in TrainConfig.__dataclass_fields__:
            path, name, param = found.groups()
            file = path or file
            yield file, None if name == "..." else name, param and param[1:-1]


def _expand(path: str) -> list[str]:
    """The paths a shell brace pattern names: ``a_{x,y}.toml`` -> ``a_x.toml``, ``a_y.toml``."""
    head, brace, rest = path.partition("{")
    if not brace:
        return [path]
    options, _, tail = rest.partition("}")
    return [one for option in options.split(",") for one in _expand(head + option + tail)]


def test_every_test_and_file_the_docs_cite_exists():
    sources = {p: p.read_text() for p in (ROOT / "tests").rglob("*.py")}
    missing = []
    for page in PAGES:
        text = page.read_text()
        for line in text.splitlines():
            for file, name, param in _tests_cited(line):
                scope = [p for p in sources if not file or p.as_posix().endswith(file)]
                if not scope:
                    missing.append(f"{page.name}: {file}")
                elif name and not any(re.search(rf"def {name}\b", sources[p]) for p in scope):
                    missing.append(f"{page.name}: {file or ''}::{name}")
                elif param and not any(
                    all(part in sources[p] for part in param.split("-")) for p in scope
                ):
                    missing.append(f"{page.name}: {file}::{name}[{param}]")
        for cited in CITED_PATH.findall(text):
            for one in _expand(cited.split("::")[0]):
                if not one.startswith("docs/_build") and not (ROOT / one).exists():
                    missing.append(f"{page.name}: {one}")
    assert not missing, missing


def _anchor(heading: str) -> str:
    """MyST's / GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_pages_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = page.parent / path if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{page.name}: {target}")
    assert not broken, broken


def test_the_readme_library_example_runs_and_says_true_values():
    text = (ROOT / "README.md").read_text()
    (block,) = _code_blocks(text, ("python",))
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    # the values its comments state
    effective = namespace["cb"].effective_number(namespace["counts"], beta=0.999)
    assert "993.3, 393.6, 48.8" in block
    assert [round(float(v), 1) for v in effective] == [993.3, 393.6, 48.8]
    weights = namespace["weights"]
    assert weights.sum().item() == pytest.approx(3.0) and str(weights.dtype) == "torch.float32"
    expected = namespace["cb"].class_balanced_loss(
        namespace["logits"], namespace["targets"], namespace["counts"], beta=0.999,
        loss_type="focal", gamma=0.5,
    )  # fmt: skip
    assert namespace["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


@functools.cache
def _names():
    """docs/_names.py (the check the Sphinx config makes), loaded by path: no Sphinx needed."""
    spec = importlib.util.spec_from_file_location("_names", ROOT / "docs" / "_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _resolves(dotted: str) -> bool:
    return _names().importable(dotted)


def test_every_python_name_the_docs_cite_exists():
    """``classbalanced.x.y`` / ``cb.x`` and ``engine/loop.py::StopFlag.agreed`` in backticks."""
    missing = []
    for page in PAGES:
        text = page.read_text()
        for name in set(re.findall(r"`(?:classbalanced|cb)(\.[\w.]*\w)", text)):
            if not _resolves("classbalanced" + name):
                missing.append(f"{page.name}: classbalanced{name}")
        for file, name in set(re.findall(r"`((?:\w+/)*\w+\.py)::([\w.]+)", text)):
            if "test_" in file or file.startswith("benchmarks/"):
                continue  # tests: test_every_test_and_file_the_docs_cite_exists
            module = "classbalanced." + file.removeprefix("src/classbalanced/")[:-3].replace(
                "/", "."
            )
            if not _resolves(f"{module}.{name}"):
                missing.append(f"{page.name}: {file}::{name}")
    assert not missing, missing


def _code_default(command: str, action: argparse.Action):
    """The default that applies: ``train``'s flags default to None (only given flags
    override a config file), the value being the TrainConfig field's."""
    field = TrainConfig.__dataclass_fields__.get(action.dest)
    if command == "train" and field is not None and action.default is None:
        return field.default if field.default_factory is dataclasses.MISSING else None
    return action.default


def _agrees(stated: str, before: str, default) -> bool:
    if isinstance(default, list | tuple):
        return stated.split() == [f"{v:g}" for v in default]
    first = re.split(r"[\s:;,]", stated, maxsplit=1)[0]
    if isinstance(default, bool):
        return first == ("yes" if default else "no")
    if isinstance(default, int | float):
        try:
            return float(first) == default
        except ValueError:
            return False
    return default in (first, before)


def test_every_default_the_help_states_is_the_codes():
    """``--help``'s "(default X)" against the argparse default or the TrainConfig field."""
    wrong = []
    for command, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            found = re.search(r"(\S*) \(default:? ([^)]*)\)|^()default ([^;,]*)", action.help or "")
            default = _code_default(command, action)
            if found is None or default is None:
                continue
            before, stated = found.group(1) or found.group(3), found.group(2) or found.group(4)
            if not _agrees(stated, before, default):
                wrong.append(f"{command} {action.option_strings}: says {stated!r}, is {default!r}")
    assert not wrong, wrong


def test_the_demo_config_file_is_the_demos_class_balanced_run():
    """configs/digits_demo.yaml says it is `classbalanced demo`'s cb_focal setting."""
    from classbalanced.config import config_from_sources
    from classbalanced.demo import DEMO_EPOCHS, DEMO_RUNS, demo_config

    (loss, beta, gamma) = dict((name, rest) for name, *rest in DEMO_RUNS)["cb_focal"]
    demo = demo_config(Path("out"), loss, beta, gamma, epochs=DEMO_EPOCHS, seed=0, progress=True)
    from_file = config_from_sources(ROOT / "configs" / "digits_demo.yaml")
    from_file.out = demo.out
    assert from_file == demo
