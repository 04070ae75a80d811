"""The R reference the book cites (tests/r/appendix) agrees with itself and with the book's rules.

``r_today.json`` classifies today's R value of every published record; re-deriving each status
with :func:`mmlib.published.classify` checks that the classification the chapters quote
("today's R lists these records as mismatches") is the book's own, not a hand-made list.
"""

import json
import math
import re
from pathlib import Path

import pytest

from mmlib.published import classify, record, records

HERE = Path(__file__).resolve().parent / "r" / "appendix"


@pytest.fixture(scope="module")
def today():
    return json.loads((HERE / "r_today.json").read_text())


@pytest.fixture(scope="module")
def appendix():
    return json.loads((HERE / "appendix.json").read_text())


def test_every_record_is_classified_once(today):
    assert sorted(row["id"] for row in today) == sorted(records())


def test_statuses_follow_the_books_rules(today):
    for row in today:
        value = row["r_value"]
        status = classify(record(row["id"]), None if value is None else float(value))
        assert status == row["status"], row["id"]


def _resolve(tree, path: str):
    """Follow a path such as models['bryk.lme.1'].varcorr['school'].sd['cses'] in the JSON."""
    node = tree
    for dotted, key in re.findall(r"\.?([A-Za-z_][\w]*)|\['([^']*)'\]", path):
        name = dotted or key
        node = node[int(name)] if isinstance(node, list) else node[name]
    return node


def test_r_values_are_those_of_appendix_json(today, appendix):
    """Each value whose path names a number in appendix.json is that number."""
    checked = 0
    for row in today:
        path = row["reason"].split(";", 1)[0].strip()
        if not path.startswith(("models[", "tests[")) or row["r_value"] is None:
            continue
        power = 2 if path.endswith("^2") else 1  # models['bryk.lmer.1'].sigma^2
        try:
            value = _resolve(appendix, path.removesuffix("^2")) ** power
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isclose(value, row["r_value"], rel_tol=1e-12, abs_tol=1e-300), row["id"]
            checked += 1
    assert checked > 600
