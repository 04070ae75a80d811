"""R's summary() printing rules.

Known values: `summary(Ag.iq)` as printed in the appendix (section 4.1) and by R 4.2.2, with
R's type-7 quantiles (`quantile(c(1, 2, 3, 4, 10))` is 1 2 3 4 10; `quantile(1:10)` is
1.00 3.25 5.50 7.75 10.00).
"""

import numpy as np
import pandas as pd

from mmlib.printing import format_r, quantile7, r_summary


def test_quantile_type_7():
    np.testing.assert_allclose(quantile7(np.arange(1, 11)), [1, 3.25, 5.5, 7.75, 10])


def test_format_r_chooses_scientific_notation_when_narrower_as_r_does():
    # R: format(c(NA, 5.2934e-09), digits = 4) -> "NA" "5.293e-09";
    #    format(c(0.000812, 0.0016), digits = 4) -> "0.000812" "0.001600"
    assert format_r([np.nan, 5.2934e-09], 4)[1] == "5.293e-09"
    assert format_r([0.000812, 0.0016], 4) == ["0.000812", "0.001600"]
    assert format_r([123456789.0, 1.0], 4) == ["123456789", "1"]


def test_format_r_rounds_like_summary_data_frame():
    # columns of summary(Ag.iq): days, age, piq, viq
    assert format_r([13, 41.75, 71, 374.53, 171.5, 11628]) == ["13", "42", "71", "375", "172", "11628"]
    assert format_r([6.513347, 21.7583825, 27.25257, 32.34668, 40.98289, 80.03285]) == [
        "6.51", "21.76", "27.25", "32.35", "40.98", "80.03"]
    assert format_r([50, 74, 84, 83.335, 93, 127]) == ["50.0", "74.0", "84.0", "83.3", "93.0", "127.0"]
    assert format_r([64, 83, 91, 92.09, 101.25, 131]) == ["64.0", "83.0", "91.0", "92.1", "101.2", "131.0"]


def test_summary_counts_factor_levels():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "f": pd.Categorical(["b", "a", "b"], categories=["b", "a"])})
    s = r_summary(df)
    assert list(s.counts["f"].index) == ["b", "a"] and list(s.counts["f"]) == [2, 1]
    assert s.table().loc["Mean", "x"] == 2.0
    assert "f: b 2, a 1" in repr(s)
