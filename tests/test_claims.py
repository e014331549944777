"""The claims: the verdict rule on synthetic tables, the effects on hand-built per-run tables."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis_lib.stats import claims
from analysis_lib.stats.claims import (AVERAGE, CLAIMS, MIXED, NOT_SUPPORTED, SUPPORTED, TOO_FEW, claim_samples,
                                       claims_table, verdict)


def samples(claim, values_by_dataset):
    rows = [{"claim": claim, "dataset": d, "seed": s, "unit": 0, "value": v}
            for d, values in values_by_dataset.items() for s, v in enumerate(values, start=1)]
    return pd.DataFrame(rows)


def test_the_rule_gives_each_verdict():
    above = CLAIMS["C3"]
    assert verdict(0.5, 2.0, above) == SUPPORTED
    assert verdict(-2.0, 0.0, above) == NOT_SUPPORTED                 # touching the margin from below
    assert verdict(-1.0, 1.0, above) == MIXED
    assert verdict(math.nan, math.nan, above) == TOO_FEW
    below = CLAIMS["C1"]                                               # deviation below 1e-4
    assert verdict(1e-7, 2e-7, below) == SUPPORTED and verdict(1e-3, 2e-3, below) == NOT_SUPPORTED
    # The average: mixed whenever datasets disagree, even with an interval on one side.
    assert verdict(0.5, 2.0, above, (SUPPORTED, NOT_SUPPORTED)) == MIXED
    assert verdict(0.5, 2.0, above, (SUPPORTED, MIXED)) == SUPPORTED


def test_synthetic_claims_table_gives_the_three_verdicts():
    table = claims_table(pd.concat([
        samples("C3", {"A": [2.0, 2.5, 3.0, 2.2], "B": [1.5, 1.8, 2.1, 1.9]}),     # all above 0
        samples("C5", {"A": [-0.3, -0.2, -0.25, -0.3], "B": [-0.1, -0.2, -0.15, -0.12]}),  # all below
        samples("C6", {"A": [1.0, 1.2, 1.1, 0.9], "B": [-1.0, -1.2, -0.8, -1.1]}),  # the datasets disagree
    ]))
    got = table.set_index(["claim", "dataset"]).verdict
    assert got[("C3", "A")] == got[("C3", "B")] == got[("C3", AVERAGE)] == SUPPORTED
    assert got[("C5", AVERAGE)] == NOT_SUPPORTED
    assert (got[("C6", "A")], got[("C6", "B")], got[("C6", AVERAGE)]) == (SUPPORTED, NOT_SUPPORTED, MIXED)
    row = table.set_index(["claim", "dataset"]).loc[("C3", "A")]
    assert row.effect == pytest.approx(2.425) and row.low <= row.effect <= row.high and row.n == 4
    # The paired test over datasets × seeds is scipy's one-sided Wilcoxon of the 8 effects.
    average = table.set_index(["claim", "dataset"]).loc[("C3", AVERAGE)]
    expected = stats.wilcoxon([2.0, 2.5, 3.0, 2.2, 1.5, 1.8, 2.1, 1.9], alternative="greater").pvalue
    assert average.p_value == pytest.approx(expected) and average.n == 8


def test_interval_is_the_percentile_bootstrap_of_the_mean():
    values = np.array([1.0, 2.0, 4.0, 8.0, 3.0])
    low, high = claims.interval(values)
    means = np.random.default_rng(1).choice(values, (20000, 5)).mean(1)
    assert low == pytest.approx(np.quantile(means, 0.025), abs=0.15)
    assert high == pytest.approx(np.quantile(means, 0.975), abs=0.15)
    assert math.isnan(claims.interval(np.array([1.0]))[0])


def test_per_image_claims_resample_images_and_test_seeds():
    rows = [{"claim": "C2", "dataset": "A", "seed": s, "unit": i, "value": 0.1 * s + 0.01 * i}
            for s in (1, 2, 3) for i in range(5)]
    row = claims_table(pd.DataFrame(rows)).iloc[0]
    assert (row.n, row.unit) == (15, "seed × image")
    seed_means = [0.1 * s + 0.02 for s in (1, 2, 3)]
    assert row.p_value == pytest.approx(stats.wilcoxon(seed_means, alternative="greater").pvalue)


def per_run_tables():
    """Hand-built per-run tables of one ivlp run with known effects."""
    run = {"dataset": "D", "seed": 1, "variant": "ivlp", "variant_name": "ivlp"}
    block0 = pd.DataFrame({"tower": ["vision", "text"], "deviation": [1e-7, 3e-7]}).assign(**run)
    share = pd.DataFrame([{"reading": s, "image": i, "block": b, "head": 0, "share": v + 0.1 * b}
                          for s, v in (("CLIP", 0.2), ("W/O", 0.5), ("W", 0.4))
                          for i in range(2) for b in range(2)]).assign(**run)
    causal = pd.DataFrame({"ablation": ["as trained", "bias term removed", "rescaling removed"] * 2,
                           "form": ["all blocks"] * 3 + ["below prompt depth"] * 3,
                           "hm": [80, 40, 75, 80, 60, 70]}).assign(**run)
    attention = pd.DataFrame([{"tower": "text", "block": 0, "head": 0, "statistic": f"eos_to_{t}",
                               "reading": "with_prompt", "model": m, "value": v}
                              for m, p, c in (("CLIP", 0.1, 0.5), ("prompted", 0.4, 0.2))
                              for t, v in (("prompt", p), ("category", c), ("sos", 1 - p - c))]).assign(**run)
    contributions = pd.DataFrame([{"tower": "text", "model": m, "method": "relevance", "token_type": t,
                                   "contribution": v} for m, p, c in (("CLIP", 1, 3), ("prompted", 3, 1))
                                  for t, v in (("prompt", p), ("category", c))]).assign(**run)
    background = pd.DataFrame({"block": [0, 0], "head": [0, 0], "feature": ["k", "v"], "foreground": [0.1, 0.2],
                               "background": [0.3, 0.2]}).assign(**run)
    metrics = pd.DataFrame([{**run, "variant": kind, "variant_name": name, "hm": hm, "n_trainable": n}
                            for kind, name, hm, n in (("ivlp", "ivlp", 70, 2304), ("bias", "bias_mlp", 72, 768),
                                                      ("bias", "bias_both", 74, 1536))])
    return {"block0": block0, "foreground_share": share, "causal_ablation": causal, "attention": attention,
            "contributions": contributions, "background_similarity": background}, metrics


def test_effects_from_hand_built_tables():
    tables, metrics = per_run_tables()
    effect = claim_samples(tables, metrics).groupby("claim").value.mean()
    assert effect["C1"] == pytest.approx(3e-7)
    assert effect["C2"] == pytest.approx(0.3)                          # W/O − CLIP, per image
    assert effect["C3"] == pytest.approx(75 - 40) and effect["C3d"] == pytest.approx(70 - 60)
    assert effect["C4"] == pytest.approx((0.4 - 0.2) - (0.1 - 0.5))
    assert effect["C4r"] == pytest.approx((0.75 - 0.25) - (0.25 - 0.75))  # shares of the total relevance
    assert effect["C5"] == pytest.approx(0.1)
    assert effect["C6"] == pytest.approx(74 - 70)                      # bias_both: 1536 is closest to 2304
