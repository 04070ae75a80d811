"""The committed data files and their R typing.

Known values come from R 4.2.2 with nlme 3.1-162 and carData 3.0.5 (the appendix.json that
shared/r-reference/appendix.R wrote): `levels(MathAchieve$School)[1:10]`,
`levels(MathAchSchool$Sector)`, `levels(KosteckiDillon$medication)`, `dim(...)`.
"""

import re

import pandas as pd
import pytest

from mmlib import datasets


def test_readme_hashes_match_the_files():
    readme = (datasets.DATA_DIR / "README.md").read_text()
    rows = re.findall(r"\| `([\w.]+\.csv)` \|.*\| `([0-9a-f]{64})` \|", readme)
    assert {name for name, _ in rows} == {s.path.name for s in datasets.SPECS.values()}
    for name, digest in rows:
        assert datasets.sha256(datasets.DATA_DIR / name) == digest, f"{name} differs from data/README.md"


def test_published_copy_hash_is_in_readme():
    readme = (datasets.DATA_DIR / "README.md").read_text()
    assert datasets.sha256(datasets.DATA_DIR / "published.json") in readme


@pytest.mark.parametrize("name, shape", [
    ("MathAchieve", (7185, 6)), ("MathAchSchool", (160, 7)), ("Blackmore", (945, 4)),
    ("KosteckiDillon", (4152, 9)), ("Wong", (331, 7)),
])
def test_shapes_as_in_r(data, name, shape):
    assert data[name].shape == shape  # dim(<name>) in R


def test_nlme_grouping_factor_order(data):
    school = data["MathAchieve"].School
    assert school.cat.ordered
    # levels(MathAchieve$School)[1:10], R 4.2.2 / nlme 3.1-162
    assert list(school.cat.categories[:10]) == [
        "8367", "8854", "4458", "5762", "6990", "5815", "7172", "4868", "7341", "1358"]


def test_order_groups_breaks_ties_by_previous_level_order():
    group = pd.Series(["b", "a", "c", "a", "b"])
    response = pd.Series([5.0, 5.0, 1.0, 2.0, 0.0])
    assert datasets.order_groups(group, response) == ["c", "a", "b"]


def test_factor_levels_in_r_order(data):
    assert list(data["MathAchSchool"].Sector.cat.categories) == ["Public", "Catholic"]
    assert list(data["KosteckiDillon"].medication.cat.categories) == ["none", "reduced", "continuing"]
    assert list(data["KosteckiDillon"].headache.cat.categories) == ["no", "yes"]
    assert list(data["Blackmore"].group.cat.categories) == ["control", "patient"]
    assert list(data["Wong"].sex.cat.categories) == ["Female", "Male"]


def test_integer_ids_stay_integers(data):
    assert data["Wong"].id.dtype.kind == "i"
    assert data["KosteckiDillon"].id.dtype.kind == "i"
    assert data["Wong"].index[0] == 1  # R's row names


def test_unknown_name_lists_the_names():
    with pytest.raises(KeyError) as err:
        datasets.load("MathAchievement")
    for name in datasets.names():
        assert name in str(err.value)


def test_level_outside_spec_is_an_error(tmp_path, monkeypatch):
    spec = datasets.SPECS["Wong"]
    frame = pd.read_csv(spec.path)
    frame.loc[0, "sex"] = "male"  # wrong case: not one of R's levels
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path)
    frame.to_csv(tmp_path / "Wong.csv", index=False)
    with pytest.raises(ValueError, match=r"Wong\.sex .*'male'"):
        datasets.load("Wong")


def test_missing_file_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="make data"):
        datasets.load("Wong")
