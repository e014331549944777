"""The known-truth test's measurements: δ and κ, the compensation S and the oracle, the permutation test."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis_lib.model.backbone import load_backbone
from analysis_lib.model.prompted import build_model
from analysis_lib.stats import known_truth as kt
from analysis_lib.stats.per_run import TABLES

SHIPPED = Path(__file__).resolve().parents[1] / "analysis_lib" / "assets" / "demo-clip.safetensors"


@pytest.fixture(scope="module")
def demo_clip():
    return load_backbone("demo-clip", str(SHIPPED))


def test_delta_through_identity_blocks_is_the_patch_embedding_of_the_pixel_difference():
    backbone = load_backbone("demo-clip")  # a private copy: its blocks are made identities below
    visual = backbone.clip.visual
    visual.ln_pre = nn.Identity()
    with torch.no_grad():
        for block in visual.transformer.resblocks:
            for linear in (block.attn.out_proj, block.mlp.c_proj):
                linear.weight.zero_()
                linear.bias.zero_()
    model = build_model("zeroshot", backbone, ["a", "b"], "{}.")
    p = kt.pairs("DemoHues", backbone, 2)
    h_plain, h_shifted = kt.residual_stream(model, p.plain), kt.residual_stream(model, p.shifted)
    patch = visual.patch_size[0]
    diff = p.shifted - p.plain                                                   # [P, 3, H, W]
    P, C, H, W = diff.shape
    pixels = diff.reshape(P, C, H // patch, patch, W // patch, patch).permute(0, 2, 4, 1, 3, 5).flatten(3)
    by_hand = pixels.flatten(1, 2) @ visual.conv1.weight.flatten(1).T          # [P, G², D]
    for block in range(h_plain.shape[0]):
        torch.testing.assert_close((h_shifted - h_plain)[block, :, 1:], by_hand, atol=1e-4, rtol=1e-4)
        assert (h_shifted - h_plain)[block, :, 0].abs().max() < 1e-5          # [CLS] sees no pixel
    delta, _ = kt.known_shift(h_plain, h_shifted, p.groups)
    torch.testing.assert_close(delta["patches"][0], by_hand.flatten(0, 1).mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(delta["foreground"][0], by_hand[p.groups["foreground"][:, 1:]].mean(0),
                               atol=1e-4, rtol=1e-4)


def test_kappa_is_one_for_a_constant_shift_and_small_for_a_random_one():
    torch.manual_seed(0)
    h = torch.randn(2, 50, 5, 8)
    groups = {"all": torch.ones(50, 5, dtype=torch.bool)}
    _, constant = kt.known_shift(h, h + torch.randn(8), groups)
    torch.testing.assert_close(constant["all"], torch.ones(2))
    _, random = kt.known_shift(h, h + torch.randn(2, 50, 5, 8), groups)
    assert (random["all"] < 0.05).all()


def test_the_oracle_at_one_block_compensates_kappa_there_and_zero_shot_nothing(demo_clip):
    model = build_model("zeroshot", demo_clip, ["a", "b"], "{}.")
    p = kt.pairs("DemoToys", demo_clip, 2)
    h_plain, h_shifted = kt.residual_stream(model, p.plain), kt.residual_stream(model, p.shifted)
    delta, kappa = kt.known_shift(h_plain, h_shifted, p.groups)
    block = 1
    steered = kt.residual_stream(model, p.shifted, kt.oracle_adds(delta, block, h_plain.shape[2]))
    s = kt.compensation(steered, h_plain, h_shifted, p.groups)
    for group in kt.SHARED_GROUPS:
        assert 0.01 < kappa[group][block] < 0.99
        torch.testing.assert_close(s[group][block], kappa[group][block], atol=1e-4, rtol=1e-4)
        assert abs(s[group][block - 1]) < 1e-6                                 # before the intervention
    zero = kt.compensation(h_shifted, h_plain, h_shifted, p.groups)
    assert all(torch.equal(v, torch.zeros_like(v)) for v in zero.values())


class Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def test_bias_term_and_rescaling_writes_add_up_to_what_the_prompts_change(demo_clip):
    """Block 0's input is the same with or without the prompts' effects, so its residual output
    before the MLP differs only by the two writes: check it on the attention output with the MLP off."""
    torch.manual_seed(0)
    model = build_model("vision", demo_clip, ["a", "b"], "{}.", vision_n_ctx=2, vision_depth=2)
    with torch.no_grad():
        model.vision_tower.prompts.vectors.normal_(std=1.0)
    p = kt.pairs("DemoHues", demo_clip, 1)
    writes = kt.attention_writes(model, p.shifted[:4])
    block0 = model.vision_tower.blocks[0]
    with torch.no_grad():
        mlp, block0.mlp = block0.mlp, Zero()  # no MLP: the block's output is x + attention
        try:
            trained = kt.residual_stream(model, p.shifted[:4])[0]
            with model.ablate(kt.Ablation(keep_rescale=False, keep_bias=False)):
                free = kt.residual_stream(model, p.shifted[:4])[0]
        finally:
            block0.mlp = mlp
    torch.testing.assert_close(trained - free, writes["bias term"][0] + writes["rescaling"][0], atol=1e-4, rtol=1e-4)
    assert writes["bias term"][0].abs().mean() > 1e-3


def test_permutation_p_is_one_over_d_factorial_for_a_perfect_diagonal():
    assert kt.permutation_p(np.eye(4)) == pytest.approx(1 / 24)
    rng = np.random.default_rng(0)
    ps = [kt.permutation_p(rng.normal(size=(4, 4))) for _ in range(400)]
    assert 0.45 < np.mean(ps) < 0.6
    np.testing.assert_allclose(kt.diagonal_margin(np.eye(3)), [1, 1, 1])


def test_specificity_matrix_finds_the_prompts_that_undo_their_own_shift():
    rng = np.random.default_rng(1)
    delta = {d: rng.normal(size=(2, 2, 16)) for d in "ABCD"}
    beta = {d: -v + 0.1 * rng.normal(size=v.shape) for d, v in delta.items()}
    m = kt.specificity_matrix(beta, delta)
    assert (kt.diagonal_margin(m.to_numpy()) > 0.5).all() and kt.permutation_p(m.to_numpy()) == pytest.approx(1 / 24)
    with pytest.raises(ValueError, match="at least two datasets"):
        kt.specificity_matrix({"A": beta["A"]}, delta)


def test_only_demo_datasets_get_the_table():
    table = TABLES["known_truth"]
    assert table.applies("ivlp", "DemoToys") and table.applies("zeroshot", "DemoSat")
    assert not table.applies("ivlp", "OxfordPets") and not table.applies("text", "DemoToys")
    with pytest.raises(ValueError, match="not a demo dataset"):
        kt.pairs("OxfordPets", None, 1)


PROMPTED = "prompts4"


def _study_table(rng, sign=-1.0, seeds=(1, 2, 3), control_sign=0.0):
    """A known_truth table as load_table returns it: zero-shot δ, IVLP β (β = sign·δ + noise), its
    control's β (control_sign·δ + noise) and S, the IVLP runs under a name other than their kind's
    (the chapters select by name)."""
    rows = []
    deltas = {d: rng.normal(size=(2, 2, 6)) for d in ("A", "B", "C", "D")}
    for seed in seeds:
        for d, delta in deltas.items():
            beta = sign * delta + 0.2 * rng.normal(size=delta.shape)
            control = control_sign * delta + 0.2 * rng.normal(size=delta.shape)
            for variant, name, quantity, condition, values in (
                    ("zeroshot", "zeroshot", "delta", "zero-shot", delta), ("ivlp", PROMPTED, "beta", "bias term", beta),
                    ("ivlp", PROMPTED, "beta", "bias term" + kt.CONTROL, control)):
                for (block, g, dim), v in np.ndenumerate(values):
                    rows.append({"dataset": d, "seed": seed, "variant": variant, "variant_name": name,
                                 "quantity": quantity, "condition": condition, "block": block,
                                 "group": kt.SHARED_GROUPS[g], "dim": dim, "value": v})
            for condition, s in (("as trained", 0.3), ("bias term removed", 0.1)):
                for block in (0, 1):
                    rows.append({"dataset": d, "seed": seed, "variant": "ivlp", "variant_name": PROMPTED,
                                 "quantity": "S", "condition": condition, "block": block, "group": "patches",
                                 "dim": -1, "value": s})
    return pd.DataFrame(rows)


def test_c7_effects_follow_the_sign_of_the_bias_term():
    rng = np.random.default_rng(2)
    undoing = kt.specificity_effects(_study_table(rng, -1.0), PROMPTED)
    assert len(undoing) == 12 and (undoing.value > 0.5).all()
    np.testing.assert_allclose(undoing.beside, 0.2)
    adding = kt.specificity_effects(_study_table(rng, +1.0), PROMPTED)
    assert (adding.value < -0.5).all()


def test_c7_effect_is_the_trained_margin_beyond_the_controls():
    """Prompts that point along their dataset's shift before any training learned nothing: the effect
    is the trained bias term's diagonal margin minus its control's."""
    table = _study_table(np.random.default_rng(4), -1.0, control_sign=-1.0)
    effects = kt.specificity_effects(table, PROMPTED).set_index(["dataset", "seed"]).value
    trained = kt.diagonal_margins(table, PROMPTED).set_index(["dataset", "seed"]).value
    control = kt.diagonal_margins(table, PROMPTED, "bias term" + kt.CONTROL).set_index(["dataset", "seed"]).value
    assert (trained > 0.5).all() and (control > 0.5).all()
    np.testing.assert_allclose(effects, (trained - control).loc[effects.index])
    assert effects.abs().max() < 0.3    # no learned specificity beyond what inserting the prompts gives


def test_c7_is_a_claim_with_a_row_per_demo_dataset_and_none_without_the_table():
    from analysis_lib.stats import claims
    table = _study_table(np.random.default_rng(3))
    effects = claims.claim_effects(claims.StudyTables({"known_truth": table}))
    assert effects.equals(claims.claim_effects(claims.StudyTables({"known_truth": table}, variant_name=PROMPTED)))
    result = claims.claims_table(effects, ["A", "B", "C", "D"], [1, 2, 3])
    c7 = result[result.claim == "C7"].set_index("dataset")
    assert list(c7.index) == ["A", "B", "C", "D", claims.AVERAGE]
    assert (c7.loc[["A", "B", "C", "D"], "verdict"] == claims.SUPPORTED).all()
    assert "C7" in claims.margin_table().claim.tolist()
    assert claims.claim_effects(claims.StudyTables({"known_truth": pd.DataFrame()})).empty
