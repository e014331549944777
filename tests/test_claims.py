"""The claims: the inference design on synthetic tables (coverage, cluster bootstrap, sign-flip
test, Holm, the labels, missing runs), the effects on hand-built per-run tables."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis_lib.data.readers import Item
from analysis_lib.data.sample import stratified_sample
from analysis_lib.stats import claims
from analysis_lib.stats.claims import (AVERAGE, CLAIMS, CONTRADICTED, HETEROGENEOUS, INCONCLUSIVE, PER_RUN,
                                       SUPPORTED, TOO_FEW, StudyTables, claim_effects, claims_table)


def effects(claim, values_by_dataset):
    """Per-run effects: {dataset: [value of seed 1, seed 2, ...]}."""
    rows = [{"claim": claim, "dataset": d, "seed": s, "image": PER_RUN, "value": v, "beside": 0.0}
            for d, values in values_by_dataset.items() for s, v in enumerate(values, start=1)]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the image sample
def test_stratified_sample_covers_every_class_and_is_not_the_first_images():
    items = [Item(f"/d/c{c}/{i}.png", c, f"class {c}") for c in range(6) for i in range(30)]   # class-ordered
    sample = stratified_sample(items, 64)
    assert {item.label for item in sample} == set(range(6))
    assert all(sum(item.label == c for item in sample) == math.ceil(64 / 6) for c in range(6))
    assert {item.label for item in items[:64]} == {0, 1, 2}                 # what test[:64] looked at
    assert sample == stratified_sample(list(items), 64)                     # drawn once, whatever the caller
    assert sample != stratified_sample(items, 64, seed=1)                   # the fixed seed decides it
    assert stratified_sample(items[:8], 64) == items[:8]                    # a small class: all of it


# --------------------------------------------------------------------------- intervals
def test_dataset_interval_covers_the_true_mean_at_its_level():
    """2,000 synthetic datasets of 3 seeds (true effect 1): the t-interval over seeds covers it in
    93-97% of them; a percentile bootstrap over the same 3 seeds does not (about 75%)."""
    rng = np.random.default_rng(0)
    claim = CLAIMS["C3"]
    values = 1.0 + rng.normal(size=(2000, 3))
    covered = []
    for v in values:
        row = claims.dataset_row(pd.DataFrame({"seed": [1, 2, 3], "image": PER_RUN, "value": v}), claim)
        covered.append(row["low"] < 1.0 < row["high"])
    assert 0.93 <= np.mean(covered) <= 0.97
    means = values[:, rng.integers(0, 3, size=(2000, 3))].mean(-1)          # [datasets, resamples]
    low, high = np.quantile(means, 0.025, axis=1), np.quantile(means, 0.975, axis=1)
    assert np.mean((low < 1.0) & (1.0 < high)) < 0.85


def test_cluster_bootstrap_applies_one_image_resample_to_every_seed():
    b = np.arange(20.0)
    # Seed 2 mirrors seed 1 image by image: one resample for both keeps their mean at 0 exactly;
    # independent resamples per seed would not.
    assert claims.cluster_bootstrap_variance(np.stack([b, -b])) == 0.0
    # Seeds that agree image by image: the variance of one seed's image mean, not a third of it.
    same = claims.cluster_bootstrap_variance(np.stack([b, b, b]))
    assert same == pytest.approx(b.var() / len(b), rel=0.15)
    # Below 10 images no bootstrap: the analytic variance of the image mean.
    assert claims.cluster_bootstrap_variance(np.stack([b[:5], b[:5]])) == pytest.approx(b[:5].var(ddof=1) / 5)


def test_per_image_rows_add_the_image_variance_to_the_seeds():
    rows = [{"seed": s, "image": i, "value": 0.1 * s + 0.01 * i} for s in (1, 2, 3) for i in range(12)]
    row = claims.dataset_row(pd.DataFrame(rows), CLAIMS["C2"])
    seed_means = np.array([0.1 * s + 0.055 for s in (1, 2, 3)])
    seeds_only = seed_means.std(ddof=1) / math.sqrt(3) * stats.t.ppf(0.975, 2)
    assert row["effect"] == pytest.approx(seed_means.mean()) and row["n"] == 3 and "12 images" in row["unit"]
    assert row["high"] - row["effect"] > seeds_only                        # widened by the images' variance


# --------------------------------------------------------------------------- tests
def test_sign_flip_p_is_the_hand_enumeration():
    values = np.array([0.8, 1.5, -0.3, 2.0, 0.4])
    observed = values.mean()
    patterns = [np.mean(values * signs) for signs in itertools.product([1, -1], repeat=len(values))]
    expected = np.mean([p >= observed - 1e-12 for p in patterns])
    assert claims.sign_flip_p(values, CLAIMS["C3"]) == pytest.approx(expected)
    below = CLAIMS["C3m"]                                                   # side below a margin of 1
    shifted = np.array([0.2, -0.5, 0.9, 0.1])
    d = shifted - 1.0
    patterns = [np.mean(d * s) for s in itertools.product([1, -1], repeat=4)]
    assert claims.sign_flip_p(shifted, below) == pytest.approx(np.mean([p <= d.mean() + 1e-12 for p in patterns]))
    assert claims.sign_flip_p(np.ones(4), CLAIMS["C3"]) == pytest.approx(1 / 16)   # the smallest p for 4


def test_holm_is_the_hand_computation():
    p = np.array([0.01, 0.04, 0.03, math.nan, 0.005])
    # sorted: 0.005 (×4), 0.01 (×3), 0.03 (×2), 0.04 (×1), each at least the one before
    expected = [0.03, 0.06, 0.06, math.nan, 0.02]
    np.testing.assert_allclose(claims.holm(p), expected)


# --------------------------------------------------------------------------- labels
def test_each_label_on_a_synthetic_table():
    eight = {d: [2.0 + k * 0.1, 2.5, 3.0] for k, d in enumerate("ABCDEFGH")}
    table = claims_table(pd.concat([
        effects("C3", eight),                                                       # supported everywhere
        effects("C4", {d: [-2.0, -2.4, -2.2] for d in "ABCDEFGH"}),                 # contradicted everywhere
        effects("C5", {"A": [1.0, 1.1, 1.2], "B": [-1.0, -1.1, -1.2], "C": [0.1, 0.2, 0.3]}),  # datasets disagree
        effects("C1", {"A": [-1.0, 1.0, 0.5], "B": [1.0, -1.2, 0.1]}),               # intervals hold 0
        effects("C2", {"A": [0.4]}),                                                # one seed
    ]), seeds=[1, 2, 3])
    got = table.set_index(["claim", "dataset"]).verdict
    assert got[("C3", "A")] == got[("C3", AVERAGE)] == SUPPORTED
    assert got[("C4", "A")] == got[("C4", AVERAGE)] == CONTRADICTED
    assert (got[("C5", "A")], got[("C5", "B")], got[("C5", AVERAGE)]) == (SUPPORTED, CONTRADICTED, HETEROGENEOUS)
    assert got[("C1", "A")] == got[("C1", AVERAGE)] == INCONCLUSIVE
    assert got[("C2", "A")] == got[("C2", AVERAGE)] == TOO_FEW
    # The Average's p is the exact sign-flip p over datasets, then Holm across the claims' Averages.
    average = table.set_index(["claim", "dataset"]).loc[("C3", AVERAGE)]
    assert (average.n, average.unit) == (8, "datasets") and average.p_value == pytest.approx(1 / 256)
    assert "1/2^8" in average.note
    averages = table[table.dataset == AVERAGE]
    np.testing.assert_allclose(averages.p_holm, claims.holm(averages.p_value.to_numpy()))


def test_supported_average_needs_the_holm_adjusted_p():
    """Four datasets all on the claim's side: the interval is, but 1/2^4 > 0.05 is the smallest p."""
    table = claims_table(effects("C3", {d: [2.0, 2.1, 2.2] for d in "ABCD"}))
    average = table.set_index("dataset").loc[AVERAGE]
    assert average.low > 0 and average.p_holm == pytest.approx(1 / 16)
    assert average.verdict == INCONCLUSIVE and "Holm-adjusted p" in average.note


def test_a_missing_run_changes_n_and_says_so():
    full = effects("C3", {"A": [2.0, 2.5, 3.0], "B": [1.5, 1.8, 2.1], "C": [1.0, 1.2, 1.1]})
    missing = full[~((full.dataset == "B") & (full.seed == 2))]
    row = claims_table(missing, ["A", "B", "C"], [1, 2, 3]).set_index("dataset").loc["B"]
    assert row.n == 2 and row.note == "2 of 3 seeds"
    no_c = full[full.dataset != "C"]
    average = claims_table(no_c, ["A", "B", "C"], [1, 2, 3]).set_index("dataset").loc[AVERAGE]
    assert average.n == 2 and average.note.startswith("2 of 3 datasets (no effect for C)")
    assert average.effect == pytest.approx(np.mean([2.5, 1.8]))             # the mean of what is there, said


# --------------------------------------------------------------------------- effects
def per_run_tables():
    """Hand-built per-run tables of one ivlp run with known effects (two images where per image)."""
    run = {"dataset": "D", "seed": 1, "variant": "ivlp", "variant_name": "ivlp"}
    tv = pd.DataFrame([{"model": m, "image": i, "block": b, "tv": v * b}
                       for m, v in (("prompted", 0.3), ("control", 0.1)) for i in range(2) for b in range(3)])
    share = pd.DataFrame([{"model": m, "image": i, "block": b, "head": 0, "enrichment": v + 0.5 * (b == 0)}
                          for m, v in (("CLIP", 1.0), ("prompted", 1.6), ("control", 1.2))
                          for i in range(2) for b in range(2)])
    causal = pd.DataFrame([{"tower": t, "form": f, "ablation": a, "hm": hm}
                           for t in ("both", "vision", "text") for f in ("all blocks", "below prompt depth")
                           for a, hm in (("as trained", 80), ("bias term removed", 40), ("rescaling removed", 75),
                                         ("both removed", 30), ("bias term mean-ablated", 79.5))
                           if not (a == "as trained" and f == "below prompt depth")])   # one form, as measured
    attention = pd.DataFrame([{"tower": "text", "block": 0, "head": 0, "statistic": f"eos_to_{t}",
                               "reading": "with_prompt", "model": m, "value": v}
                              for m, p, c in (("CLIP", 0.1, 0.5), ("prompted", 0.4, 0.2), ("control", 0.2, 0.4))
                              for t, v in (("prompt", p), ("category", c), ("sos", 1 - p - c))])
    contributions = pd.DataFrame([{"tower": "text", "model": m, "method": "relevance", "token_type": t,
                                   "contribution": v} for m, p, c in (("CLIP", 1, 3), ("prompted", 3, 1),
                                                                      ("control", 1, 1))
                                  for t, v in (("prompt", p), ("category", c))])
    keys = pd.DataFrame([{"model": m, "image": i, "block": 0, "centred_gap": v}
                         for m, v in (("prompted", 0.3), ("control", 0.1)) for i in range(2)])
    metrics = pd.DataFrame([{**run, "dataset": d, "seed": s, "variant": kind, "variant_name": name,
                             "hm": hm + bonus * (kind == "bias"), "n_trainable": n}
                            for d, bonus in (("D", 0), ("E", 2)) for s in (1, 2)
                            for kind, name, hm, n in (("ivlp", "ivlp", 70, 2304), ("bias", "bias_mlp", 72, 768),
                                                      ("bias", "bias_both", 74 + s, 1536))])
    tables = {"relative_attention": tv, "foreground_share": share, "causal_ablation": causal, "attention": attention,
              "contributions": contributions, "background_keys": keys}
    return StudyTables({k: v.assign(**run) for k, v in tables.items()}, metrics, low_information="E")


def test_effects_from_hand_built_tables():
    found = claim_effects(per_run_tables())
    effect = found.groupby("claim").value.mean()
    beside = found.groupby("claim").beside.mean()
    assert effect["C1"] == pytest.approx((0.3 - 0.1) * 1.5)               # blocks 1, 2: trained − control
    assert beside["C1"] == pytest.approx(0.3 * 1.5)
    assert effect["C2"] == pytest.approx(0.4) and beside["C2"] == pytest.approx(0.6)   # block 0 left out
    assert effect["C3"] == effect["C3v"] == effect["C3t"] == effect["C3d"] == pytest.approx(75 - 40)
    assert beside["C3"] == beside["C3d"] == pytest.approx(80 - 30) and effect["C3m"] == pytest.approx(0.5)
    assert effect["C4"] == pytest.approx((0.4 - 0.2) - (0.2 - 0.4))
    assert beside["C4"] == pytest.approx((0.4 - 0.2) - (0.1 - 0.5))
    assert effect["C4r"] == pytest.approx((0.75 - 0.25) - 0.0)             # shares of the total relevance
    assert effect["C5"] == pytest.approx(0.2)
    assert effect["C6"] == pytest.approx(np.mean([75 - 70, 76 - 70, 77 - 70, 78 - 70]))  # bias_both is closest
    c6e = found[found.claim == "C6e"]
    assert set(c6e.dataset) == {"E − others"} and c6e.value.tolist() == pytest.approx([2.0, 2.0])
    assert set(found[found.claim == "C2"].image) == {0, 1} and (found[found.claim == "C4"].image == PER_RUN).all()


def test_margin_table_lists_every_claim_with_its_reason():
    table = claims.margin_table()
    assert list(table.claim) == list(CLAIMS) and table.reason.str.len().gt(0).all()
    assert table.set_index("claim").loc["C6", "holds when the effect is"] == "above -1"
    assert table.set_index("claim").loc["C3m", "holds when the effect is"] == "below 1"

