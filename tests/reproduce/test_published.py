"""The paper's numbers in published.json match paper_tables.md cell by cell.

paper_tables.md, beside this file, is a second transcription of the published tables,
laid out as the papers print them: a typo in either copy fails these tests.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from classbalanced.reproduce import published as pub

TABLES = Path(__file__).with_name("paper_tables.md")
FACTORS = [200, 100, 50, 20, 10, 1]


def _section(title: str) -> str:
    text = TABLES.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _rows(section: str) -> dict[str, list[str]]:
    """First cell -> the other cells of every row of the section's table (the header
    row included: its first cell is empty or a column title)."""
    rows = {}
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _table2_from_reference() -> dict[str, list[str]]:
    rows = _rows(_section("Table 2"))
    rows.pop("")  # the header row
    return rows


def _columns():
    for i in range(12):
        yield i, ("cifar10" if i < 6 else "cifar100"), FACTORS[i % 6]


def test_package_data_is_shipped():
    assert resources.files("classbalanced.reproduce").joinpath("published.json").is_file()
    assert pub.published_data()["table2"]["imbalance_factors"] == FACTORS


def test_table2_matches_reference_cell_by_cell():
    rows = _table2_from_reference()
    methods = {
        "Softmax": ("softmax", None),
        "Sigmoid": ("sigmoid", None),
        "Focal g=0.5": ("focal", 0.5),
        "Focal g=1": ("focal", 1.0),
        "Focal g=2": ("focal", 2.0),
        "Class-balanced (best)": ("class_balanced", None),
    }
    assert set(methods) | {"its loss", "its beta", "its gamma"} == set(rows)
    checked = 0
    for label, (method, gamma) in methods.items():
        assert len(rows[label]) == 12
        for i, dataset, factor in _columns():
            expected = float(rows[label][i])
            assert pub.published_error(dataset, factor, method, gamma=gamma) == expected, (
                label,
                dataset,
                factor,
            )
            checked += 1
    assert checked == 72

    def value(text):
        return None if text == "-" else float(text)

    for i, dataset, factor in _columns():
        setting = pub.paper_cb_setting(dataset, factor)
        assert setting == {
            "loss": rows["its loss"][i],
            "beta": value(rows["its beta"][i]),
            "gamma": value(rows["its gamma"][i]),
        }, (dataset, factor)


def test_table2_list_agrees_with_lookup():
    cells = pub.table2()
    assert len(cells) == 72
    assert (
        len({(c["dataset"], c["imbalance_factor"], c["method"], c["gamma"]) for c in cells}) == 72
    )
    for c in cells:
        gamma = c["gamma"] if c["method"] == "focal" else None
        assert (
            pub.published_error(c["dataset"], c["imbalance_factor"], c["method"], gamma)
            == (c["error_percent"])
        )
        if c["method"] == "class_balanced":
            assert {k: c[k] for k in ("loss", "beta", "gamma")} == pub.paper_cb_setting(
                c["dataset"], c["imbalance_factor"]
            )
        else:
            assert c["beta"] == 0.0


def test_table3_and_later_work_match_reference():
    table3 = _rows(_section("Table 3"))
    names = {"iNat17": "inat2017", "iNat18": "inat2018", "ImageNet": "imagenet"}
    assert [names[n] for n in table3.pop("loss")] == ["inat2017", "inat2018", "imagenet"]
    methods = {"softmax": "softmax", "class-balanced focal": "class_balanced"}
    assert set(table3) == set(methods)
    checked = 0
    for label, method in methods.items():
        for name, cell in zip(names.values(), table3[label], strict=True):
            top1, top5 = (float(x) for x in cell.split("/"))
            assert pub.published_large(name, method) == {"top1": top1, "top5": top5}
            assert pub.published_error(name, None, method) == top1
            checked += 1
    assert checked == 6

    later = _rows(_section("Later work on the same benchmark"))
    assert later.pop("method") == ["CIFAR-10 / CIFAR-100"]
    assert list(later) == ["CE-DRW", "LDAM-DRW", "logit-adjusted loss"]
    for method, (cell,) in zip(pub.LATER_METHODS, later.values(), strict=True):
        c10, c100 = re.fullmatch(r"(\d+\.\d+) / (\d+\.\d+)", cell).groups()
        assert pub.published_error("cifar10", 100, method) == float(c10)
        assert pub.published_error("cifar100", 100, method) == float(c100)


def test_spot_checks_without_reference():
    assert pub.published_error("cifar10", 200, "softmax") == 34.32
    assert pub.published_error("CIFAR-100", 1.0, "focal", gamma=2) == 28.52
    assert pub.published_error("cifar100", 20, "cb") == 47.41
    assert pub.paper_cb_setting("cifar100", 20) == {"loss": "focal", "beta": 0.99, "gamma": 0.5}
    assert pub.paper_cb_setting("cifar10", 200) == {
        "loss": "softmax",
        "beta": 0.9999,
        "gamma": None,
    }
    assert pub.published_large("inat2018", "class_balanced") == {"top1": 38.88, "top5": 18.97}
    assert pub.paper_cb_setting("inat2017", None) == {"loss": "focal", "beta": 0.999, "gamma": 0.5}
    assert pub.published_error("cifar100", 100, "logit_adjusted") == 56.11
    assert [r["error_percent"] for r in pub.later_work() if r["method"] == "ce_drw"] == [
        25.14,
        59.34,
    ]
    assert len(pub.table3()) == 6


def test_cells_the_paper_does_not_have():
    assert pub.published_error("cifar10", 30, "softmax") is None
    assert pub.published_error("digits", 10, "softmax") is None
    assert pub.published_error("cifar10", 100, "focal", gamma=3.0) is None
    assert pub.published_error("cifar10", 50, "ldam_drw") is None
    assert pub.paper_cb_setting("digits", 10) is None
    assert pub.paper_cb_setting("cifar10", 30) is None


def test_bad_queries_raise():
    with pytest.raises(ValueError, match="unknown method"):
        pub.published_error("cifar10", 100, "hinge")
    with pytest.raises(ValueError, match="gamma"):
        pub.published_error("cifar10", 100, "focal")
    with pytest.raises(TypeError):
        pub.published_error("cifar10", "100", "softmax")


def test_accessors_return_copies():
    pub.table2()[0]["error_percent"] = 0.0
    pub.published_data()["table2"]["rows"]["softmax"]["cifar10"][0] = 0.0
    assert pub.published_error("cifar10", 200, "softmax") == 34.32
