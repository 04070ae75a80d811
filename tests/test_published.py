"""The checker of published numbers, the ledger and the reproduction report."""

import json

import pytest

from mmlib import published
from mmlib.published import Ledger, PublishedError, Record, classify, record, records


def rec(printed, value, decimals, **kw):
    return Record(id="t", section="2.1", model="m", block="b", term=None, column=None,
                  printed=printed, value=value, decimals=decimals, **kw)


def test_all_1254_records_load_and_map_to_a_chapter():
    assert len(records()) == 1254
    assert {r.chapter for r in records().values()} == set(published.CHAPTERS)


def test_every_printed_string_agrees_with_its_value():
    # The checker compares with `printed`; a record whose value disagrees would be ambiguous.
    for r in records().values():
        if r.bound is None:
            assert r.format(r.value) == r.expected, r.id


def test_exact_and_last_digit():
    r = rec("-0.428", -0.428, 3)
    assert classify(r, -0.42849) == "exact"
    assert classify(r, -0.4284) == "exact"
    assert classify(r, -0.4286) == "last_digit"
    assert classify(r, -0.4274) == "last_digit"


def test_wrong_value_is_a_mismatch():
    r = rec("12.128", 12.128, 3)
    assert classify(r, 12.138) == "mismatch"
    assert classify(r, -12.128) == "mismatch"
    assert classify(r, float("nan")) == "mismatch"
    assert classify(r, None) == "mismatch"


def test_wrong_rounding_is_a_mismatch():
    # printed at 3 decimals: a value that only agrees after rounding to 2 does not pass
    r = rec("0.192", 0.192, 3)
    assert classify(r, 0.1875) == "mismatch"  # prints 0.188 (4 units off), though both are 0.19


def test_leading_zero_dropped_and_words():
    assert classify(rec(".631", 0.631, 3), 0.63149) == "exact"
    assert classify(rec("-.995", -0.995, 3), -0.9951) == "exact"
    assert classify(rec("Forty", 40.0, 0), 40) == "exact"
    assert classify(rec("five", 5.0, 0), 4) == "last_digit"


def test_a_count_one_off_is_a_mismatch_not_a_rounding_difference():
    # AIC printed without decimals is a rounded continuous number; a df or an index is not
    assert classify(rec("2593", 2593.0, 0, quantity="AIC"), 2594.2) == "last_digit"
    assert classify(rec("127", 127.0, 0, quantity="df"), 128) == "mismatch"
    assert classify(rec("2", 2.0, 0, quantity="grad_component"), 3) == "mismatch"
    assert classify(rec("200", 200.0, 0, quantity="n_groups"), 199) == "mismatch"


def test_e_notation():
    r = rec("4.1e-09", 4.1e-09, 10, notation="e", mantissa_decimals=1)
    assert classify(r, 4.14e-09) == "exact"
    assert classify(r, 4.2e-09) == "last_digit"
    assert classify(r, 4.1e-08) == "mismatch"


def test_bounds():
    r = rec("< 2e-16", None, 16, bound="<", limit=2e-16)
    assert classify(r, 1e-20) == "bound"
    assert classify(r, 3e-16) == "mismatch"
    assert classify(rec("<.0001", None, 4, bound="<", limit=1e-4), 2e-4) == "mismatch"


def test_unknown_record_suggests_near_ids():
    with pytest.raises(PublishedError, match="did you mean MathAchieve/dim/nrow"):
        record("MathAchieve/dim/nrows")


def test_ledger_raises_on_unexplained_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(published, "RESULTS_DIR", tmp_path)
    ledger = Ledger("01-hsb")
    ledger.check("MathAchieve/dim/nrow", 7185)
    ledger.check("MathAchieve/dim/ncol", 8)
    with pytest.raises(PublishedError, match="MathAchieve/dim/ncol: ours 8, published 6"):
        ledger.verify()


def test_ledger_rejects_a_record_of_another_chapter():
    with pytest.raises(PublishedError, match="belongs to chapter 04-coma"):
        Ledger("01-hsb").check("Wong/prose/n_obs", 331)


def test_explained_mismatch_is_accepted(tmp_path, monkeypatch):
    path = tmp_path / "explanations.yaml"
    path.write_text("- id: MathAchieve/dim/ncol\n  reason: a test\n  evidence: none\n")
    monkeypatch.setattr(published, "EXPLANATIONS_PATH", path)
    monkeypatch.setattr(published, "RESULTS_DIR", tmp_path)
    published.explanations.cache_clear()
    try:
        ledger = Ledger("01-hsb")
        assert ledger.check("MathAchieve/dim/ncol", 8).status == "explained"
        ledger.verify()
        assert list(ledger.explained().frame().record) == ["MathAchieve/dim/ncol"]
        assert "a test" in repr(ledger.explained())
    finally:
        published.explanations.cache_clear()


def test_explanation_must_name_a_record_and_give_evidence(tmp_path, monkeypatch):
    path = tmp_path / "explanations.yaml"
    monkeypatch.setattr(published, "EXPLANATIONS_PATH", path)
    try:
        path.write_text("- id: no/such/record\n  reason: r\n  evidence: e\n")
        published.explanations.cache_clear()
        with pytest.raises(PublishedError, match="no published record"):
            published.explanations()
        path.write_text("- id: MathAchieve/dim/ncol\n  reason: r\n")
        published.explanations.cache_clear()
        with pytest.raises(PublishedError, match="lacks evidence"):
            published.explanations()
    finally:
        published.explanations.cache_clear()


def test_saved_results_detect_any_change_to_a_covered_record():
    """A published value two units (in its last printed place) away from ours fails its check.

    This is the property behind "changing a published value makes make test fail": every
    value the chapters saved is re-classified against a copy of its record moved that far.
    """
    saved = [row for p in published.RESULTS_DIR.glob("*.json") for row in json.loads(p.read_text())]
    assert len(saved) > 500
    for row in saved:
        r = record(row["id"])
        if r.bound is not None or row["ours_more"] == "NA":  # a bound, or nothing of ours (NA)
            continue
        value = float(row["ours_more"])
        places = r.mantissa_decimals if r.notation == "e" else r.decimals
        ours = r.format(value)
        if r.notation == "e":
            mantissa, exponent = ours.split("e")
            printed = f"{float(mantissa) + 2 * 10 ** -places:.{places}f}e{exponent}"
        else:
            printed = f"{float(ours) + 2 * 10 ** -places:.{places}f}"
        moved = Record(**{**r.__dict__, "printed": printed, "value": float(printed)})
        assert classify(moved, value) == "mismatch", row["id"]


def test_report_counts_every_record_once():
    rep = published.report()
    assert len(rep) == 1254 and rep.id.is_unique
    assert set(rep.status) <= set(published.STATUSES)
    table = published.summary(rep)
    assert table.loc[("all", ""), "total"] == 1254
    assert table.loc[("data echoes", ""), "total"] + table.loc[("model results", ""), "total"] == 1254
    assert (rep.kind == "data").sum() == table.loc[("data echoes", ""), "total"] > 400


def test_reproduction_csv_matches_the_saved_results():
    import pandas as pd

    csv = pd.read_csv(published.ROOT / "chapters" / "reproduction.csv", dtype=str, keep_default_na=False)
    rep = published.report()
    assert list(csv.columns) == ["id", "section", "model", "kind", "status", "ours", "ours_more", "printed",
                                 "rel_diff"]
    assert csv.id.tolist() == rep.id.tolist()
    assert csv.status.tolist() == rep.status.tolist()
    assert csv.ours_more.tolist() == rep.ours_more.tolist()


def test_relative_difference_is_taken_from_the_saved_digits():
    r = record("bryk.lme.1/fit/logLik")
    assert published._relative_difference(r.expected, r) == "0"
    assert published._relative_difference(f"{float(r.expected) * 1.001:.6f}", r) == "-0.001"  # logLik < 0
    assert published._relative_difference("NA", r) == ""
