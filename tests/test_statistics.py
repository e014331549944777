"""Attention statistics on hand-built maps with known answers."""
import math
from types import SimpleNamespace

import pytest
import torch

from analysis_lib.stats.rollout import attention_rollout, rollout_row
from analysis_lib.model.prompted import TOKEN_TYPES
from analysis_lib.stats.attention_stats import (
    AttentionStatistics, DecompositionStatistics, GridLayout, LayoutError, TextLayout, attention_distance,
    attention_entropy, block0_deviation, cls_foreground_of_patches, cls_foreground_share, eos_attention_by_type,
    parse_hook_name, prompt_background_similarity, renormalise_without)

G, N_PROMPTS, PX = 4, 2, 16
N = 1 + G * G + N_PROMPTS                     # [CLS], 16 patches, 2 prompts
PROMPTS = slice(1 + G * G, N)


@pytest.fixture
def layout():
    is_prompt = torch.zeros(N, dtype=torch.bool)
    is_prompt[PROMPTS] = True
    return GridLayout(is_prompt, G, PX)


@pytest.fixture
def text():
    types = [["sos", "prompt", "prompt", "category", "period", "eos", "pad", "pad"],
             ["sos", "prompt", "prompt", "category", "category", "period", "eos", "pad"],
             ["sos", "prompt", "prompt", "category", "template", "template", "period", "eos"]]
    return TextLayout(types, torch.tensor([5, 6, 7]))


def random_pattern(*shape, causal=False, seed=0):
    scores = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if causal:
        n = shape[-1]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(dim=-1)


def offset_pattern(mass_on_target=1.0, mass_on_prompt=0.0, mass_on_cls=0.0):
    """Each patch (r, c) attends to patch (r + 1, c + 2), clipped to the grid; the rest as given."""
    A = torch.zeros(1, 1, N, N)
    for r in range(G):
        for c in range(G):
            A[0, 0, 1 + r * G + c, 1 + min(r + 1, G - 1) * G + min(c + 2, G - 1)] = mass_on_target
    patches = slice(1, 1 + G * G)
    A[0, 0, patches, PROMPTS.start] = mass_on_prompt
    A[0, 0, patches, 0] = mass_on_cls
    return A


def test_uniform_attention_has_entropy_log_n(layout):
    A = torch.full((2, 3, N, N), 1.0 / N)
    assert torch.allclose(attention_entropy(A, layout), torch.full((2, 3, G * G), math.log(N)))
    without = attention_entropy(A, layout, "without_prompt")
    assert torch.allclose(without, torch.full((2, 3, G * G), math.log(1 + G * G)))   # [CLS] + patches kept


def test_one_hot_offset_gives_the_hand_computed_distance(layout):
    d = attention_distance(offset_pattern(), layout)[0, 0]
    # Query (0, 0) → (1, 2): √5 patches; the last row and column are clipped; (3, 3) stays put.
    assert d[0] == pytest.approx(PX * math.sqrt(5))
    assert d[G * G - 1] == 0
    # Rows 0-2: columns 0,1 at √5, column 2 at √2, column 3 at 1; row 3: 2, 2, 1, 0 (pixels / PX).
    assert d.mean() == pytest.approx(PX * (6 * math.sqrt(5) + 3 * math.sqrt(2) + 3 + 5) / 16)


def test_prompt_and_cls_keys_count_at_distance_zero(layout):
    m, c = 0.3, 0.1
    base = attention_distance(offset_pattern(), layout)
    A = offset_pattern(1 - m - c, m, c)
    assert torch.allclose(attention_distance(A, layout), (1 - m - c) * base)
    # Without prompts the rows are renormalised over [CLS] + patches: the prompt share vanishes,
    # [CLS] keeps its share at distance 0.
    assert torch.allclose(attention_distance(A, layout, "without_prompt"), (1 - m - c) / (1 - m) * base)


def test_with_prompt_distance_shrinks_by_exactly_the_prompt_mass(layout):
    A = random_pattern(2, 3, N, N)
    on_prompts = A[:, :, 1:1 + G * G, PROMPTS].sum(-1)                        # [B, H, G²]
    with_prompt = attention_distance(A, layout)
    assert torch.allclose(with_prompt, (1 - on_prompts) * attention_distance(A, layout, "without_prompt"))
    assert (with_prompt < attention_distance(A, layout, "without_prompt")).all()


def test_without_prompt_is_the_statistic_of_the_renormalised_maps(layout):
    A = random_pattern(2, 3, N, N)
    renormalised = renormalise_without(A, layout.is_prompt)
    assert torch.allclose(renormalised.sum(-1), torch.ones(2, 3, N))
    assert (renormalised[..., PROMPTS] == 0).all() and (renormalised[..., 0] > 0).all()
    kept = A[..., :PROMPTS.start]
    assert torch.allclose(renormalised[..., :PROMPTS.start], kept / kept.sum(-1, keepdim=True))
    for statistic in (attention_distance, attention_entropy):
        assert torch.allclose(statistic(A, layout, "without_prompt"), statistic(renormalised, layout))
        assert not torch.allclose(statistic(A, layout, "without_prompt"), statistic(A, layout))


def probing_vits_distance(rows, grid, patch_px):
    """Mean attention distance as the probing-vits code defines it, written out as loops: the
    [CLS] and prompt keys are dropped without renormalising (so they weigh at distance 0)."""
    total = 0.0
    for q in range(grid * grid):
        for k in range(grid * grid):
            dy, dx = q // grid - k // grid, q % grid - k % grid
            total += rows[q, 1 + k].item() * patch_px * math.hypot(dy, dx)
    return total / (grid * grid)


def test_with_prompt_distance_is_the_probing_vits_formula(layout):
    A = random_pattern(2, 3, N, N, seed=3)
    ours = attention_distance(A, layout).mean(-1)                          # [B, H]
    for b in range(2):
        for h in range(3):
            assert ours[b, h].item() == pytest.approx(probing_vits_distance(A[b, h, 1:1 + G * G], G, PX), rel=1e-5)


def test_the_three_readings_agree_for_a_model_without_prompts():
    n = 1 + G * G
    A = random_pattern(2, 3, n, n, seed=4)
    unprompted = GridLayout(torch.zeros(n, dtype=torch.bool), G, PX)
    for statistic in (attention_distance, attention_entropy):
        assert torch.allclose(statistic(A, unprompted, "with_prompt"), statistic(A, unprompted, "without_prompt"))


def test_entropy_without_prompt_is_the_hand_renormalised_rows(layout):
    A = random_pattern(1, 2, N, N, seed=5)
    for h in range(2):
        row = A[0, h, 1, :PROMPTS.start].double()                          # patch query 0: [CLS] + patches
        row = row / row.sum()
        expected = -(row * row.log()).sum().item()
        assert attention_entropy(A, layout, "without_prompt")[0, h, 0].item() == pytest.approx(expected, rel=1e-5)


def test_cls_foreground_share_on_a_hand_built_row(layout):
    A = torch.zeros(1, 1, N, N)
    # [CLS] row: 0.1 on itself, 0.2 + 0.1 on two foreground patches, 0.2 on background, 0.4 on prompts.
    A[0, 0, 0, 0], A[0, 0, 0, 1], A[0, 0, 0, 2], A[0, 0, 0, 3] = 0.1, 0.2, 0.1, 0.2
    A[0, 0, 0, PROMPTS] = 0.2
    fg = torch.zeros(1, G * G, dtype=torch.bool)
    fg[0, :2] = True                                                       # patches 0 and 1 (keys 1 and 2)
    assert cls_foreground_share(A, layout, fg).item() == pytest.approx(0.3)
    assert cls_foreground_share(A, layout, fg, "without_prompt").item() == pytest.approx(0.3 / 0.6)
    assert cls_foreground_of_patches(A, layout, fg).item() == pytest.approx(0.3 / 0.5)


def test_block0_deviation_is_zero_for_a_proportional_map_only():
    zero = random_pattern(2, 3, 5, 5, seed=6)
    lam = torch.rand(2, 3, 7) * 0.5 + 0.5
    prompted = torch.zeros(2, 3, 7, 7)                                     # prompts at positions 5, 6
    prompted[..., :5, :5] = lam[..., :5, None] * zero
    prompted[..., :5, 5:] = (1 - lam[..., :5, None]) / 2
    shared, all_zero = torch.arange(7) < 5, torch.ones(5, dtype=torch.bool)
    assert block0_deviation(zero, all_zero, prompted, lam, shared) < 1e-7
    assert block0_deviation(zero, all_zero, prompted, torch.ones_like(lam), shared) > 0.01


def test_entropy_treats_zero_attention_as_zero_contribution(layout):
    entropy = attention_entropy(offset_pattern(), layout)
    assert torch.isfinite(entropy).all() and (entropy == 0).all()


def test_eos_attention_groups_sum_to_one_per_head(text):
    A = random_pattern(3, 4, 8, 8, causal=True)
    by_type = eos_attention_by_type(A, text)
    assert by_type.shape == (4, len(TOKEN_TYPES))
    assert torch.allclose(by_type.sum(-1), torch.ones(4))


def test_eos_attention_of_uniform_causal_rows_counts_tokens_per_group(text):
    A = torch.ones(3, 2, 8, 8).tril()
    A = A / A.sum(-1, keepdim=True)
    by_type = eos_attention_by_type(A, text)[0]
    # EOS rows see 6, 7 and 8 tokens; class 0 has 1 category token of 6, class 1 2 of 7, class 2 1 of 8.
    category = TOKEN_TYPES.index("category")
    assert by_type[category].item() == pytest.approx((1 / 6 + 2 / 7 + 1 / 8) / 3)
    template = TOKEN_TYPES.index("template")
    assert by_type[template].item() == pytest.approx((2 / 8) / 3)


def test_streaming_statistics_equal_the_concatenated_batch(layout, text):
    stats = AttentionStatistics(layout, text)
    vision = [random_pattern(b, 3, N, N, seed=b) for b in (2, 5)]
    texts = [random_pattern(3, 4, 8, 8, causal=True, seed=s) for s in (1, 2)]
    for v, t in zip(vision, texts):
        stats.record("vision.blocks.1.attn.pattern", v)
        stats.record("text.blocks.0.attn.pattern", t)
    table = stats.result().set_index(["tower", "block", "statistic", "reading", "head"])
    whole = torch.cat(vision)
    for reading in ("with_prompt", "without_prompt"):
        for name, statistic in (("attention_distance", attention_distance), ("attention_entropy", attention_entropy)):
            expected = statistic(whole, layout, reading).mean((0, 2))
            got = table.loc[("vision", 1, name, reading)]
            assert torch.allclose(torch.tensor(got["value"].to_numpy()).float(), expected, atol=1e-5)
            assert (got["n"] == 7 * G * G).all()
    expected = (eos_attention_by_type(texts[0], text) + eos_attention_by_type(texts[1], text)) / 2
    for g, group in enumerate(TOKEN_TYPES):
        got = table.loc[("text", 0, f"eos_to_{group}", "with_prompt")]["value"].to_numpy()
        assert torch.allclose(torch.tensor(got).float(), expected[:, g], atol=1e-6)
    assert set(stats.result().columns) == {"tower", "block", "head", "statistic", "reading", "value", "n"}


def test_decomposition_means_over_the_masked_queries(layout, text):
    masks = {"vision": ~layout.is_prompt, "text": text.query_mask()}
    assert text.query_mask()[0].tolist() == [True] * 6 + [False] * 2
    stats = DecompositionStatistics(masks)
    lams = [torch.rand(b, 3, N, generator=torch.Generator().manual_seed(b)) for b in (2, 3)]
    parts = [torch.randn(3, 4, 8, 5, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    for lam, part in zip(lams, parts):
        stats.record("vision.blocks.2.attn.lam", lam)
        stats.record("text.blocks.0.attn.prompt_part", part)
    table = stats.result().set_index(["tower", "block", "statistic", "head"])
    expected = torch.cat(lams)[:, :, ~layout.is_prompt].mean((0, 2))
    got = table.loc[("vision", 2, "lambda")]
    assert torch.allclose(torch.tensor(got["value"].to_numpy()).float(), expected)
    assert (got["n"] == 5 * (N - N_PROMPTS)).all()
    norms = torch.cat(parts).norm(dim=-1)                                  # [2C, H, N]
    mask = torch.cat([masks["text"]] * 2)                                  # [2C, N]
    expected = (norms * mask[:, None]).sum((0, 2)) / mask.sum()
    got = table.loc[("text", 0, "prompt_part_norm")]["value"].to_numpy()
    assert torch.allclose(torch.tensor(got).float(), expected)


def test_recorders_want_only_their_hooks(layout):
    stats = AttentionStatistics(vision=layout)
    assert stats.wants("vision.blocks.11.attn.pattern")
    assert not stats.wants("text.blocks.0.attn.pattern")
    assert not stats.wants("vision.blocks.0.attn.k")
    decomposition = DecompositionStatistics({"text": torch.ones(8, dtype=torch.bool)})
    assert decomposition.wants("text.blocks.3.attn.token_part")
    assert not decomposition.wants("vision.blocks.3.attn.lam")
    assert parse_hook_name("vision.blocks.3.attn.pattern") == ("vision", 3, "attn.pattern")
    assert parse_hook_name("vision.attn.pattern") is None


def test_for_model_reads_the_models_token_layouts(text):
    is_prompt = torch.zeros(N, dtype=torch.bool)
    is_prompt[PROMPTS] = True
    layouts = {"vision": SimpleNamespace(is_prompt=is_prompt, grid=G, patch_px=PX, token_types=None),
               "text": SimpleNamespace(grid=None, token_types=text.token_types, eos_index=text.eos_index,
                                       is_prompt=torch.tensor([False, True, True] + [False] * 5))}
    model = SimpleNamespace(token_layout=layouts.__getitem__)
    stats = AttentionStatistics.for_model(model)
    assert stats.vision.patches == slice(1, 1 + G * G) and stats.vision.cls_index == 0
    masks = DecompositionStatistics.for_model(model).query_masks
    assert masks["vision"].sum() == 1 + G * G
    # Text: the original tokens up to each [EOS], never the prompt queries (positions 1, 2).
    assert masks["text"][1].tolist() == [True, False, False, True, True, True, True, False]
    with pytest.raises(LayoutError, match="model.token_layout\\('vision'\\)"):
        GridLayout.from_token_layout(layouts["text"])


def test_rollout_of_identity_attention_is_the_identity():
    eye = torch.eye(6).expand(2, 3, 6, 6)
    assert torch.equal(attention_rollout([eye] * 4), torch.eye(6).expand(2, 6, 6))


def test_rollout_of_uniform_attention_halves_the_identity_per_block():
    # Each block mixes (U + I) / 2 with U the uniform matrix; U² = U, so k blocks give (1 − 2⁻ᵏ) U + 2⁻ᵏ I.
    n, k = 5, 3
    uniform = torch.full((1, 2, n, n), 1.0 / n)
    expected = (1 - 2 ** -k) * torch.full((n, n), 1.0 / n) + 2 ** -k * torch.eye(n)
    rollout = attention_rollout([uniform] * k)
    assert torch.allclose(rollout[0], expected)
    rows = rollout_row(attention_rollout([random_pattern(3, 2, n, n, causal=True)] * 2), torch.tensor([4, 2, 0]))
    assert rows[2].tolist() == [1.0, 0, 0, 0, 0]                            # causal: token 0 sees only itself
    assert torch.allclose(rows.sum(-1), torch.ones(3))


def test_prompt_resembling_background_scores_one_on_background(layout):
    B, H, d = 2, 3, 4
    background_key, foreground_key = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0.6, 0.8, 0, 0])
    foreground = torch.zeros(B, G * G, dtype=torch.bool)
    foreground[0, :5] = True
    foreground[1, 7:9] = True
    keys = torch.randn(B, H, N, d)
    keys[:, :, 1:1 + G * G] = torch.where(foreground[:, None, :, None], foreground_key, background_key)
    keys[:, :, PROMPTS] = 2.5 * background_key                              # same direction, other length
    similarity = prompt_background_similarity(keys, layout, foreground)
    assert torch.allclose(similarity.background, torch.ones(H, N_PROMPTS))
    assert torch.allclose(similarity.foreground, torch.full((H, N_PROMPTS), 0.6))
    assert (similarity.n_foreground, similarity.n_background) == (7, 2 * G * G - 7)


@pytest.mark.parametrize("call, message", [
    (lambda L, T: attention_distance(torch.rand(1, 1, N - 1, N - 1), L), "layout of the model"),
    (lambda L, T: attention_entropy(torch.rand(1, 1, N, N), L, "W Prompt"), "reading must be one of"),
    (lambda L, T: GridLayout(torch.zeros(10, dtype=torch.bool), G), "do not fit 10 tokens"),
    (lambda L, T: TextLayout(T.token_types, torch.tensor([5, 6, 6])), "not labelled 'eos'"),
    (lambda L, T: T.membership(("sos", "eos")), "are in no group"),
    (lambda L, T: eos_attention_by_type(torch.rand(2, 1, 8, 8), T), "3 classes of 8 tokens"),
    (lambda L, T: prompt_background_similarity(torch.rand(1, 1, N, 4), L, torch.ones(1, 9, dtype=torch.bool)),
     "one flag per patch"),
    (lambda L, T: cls_foreground_share(torch.rand(1, 1, N, N), L, torch.ones(2, G * G, dtype=torch.bool)),
     "one flag per patch"),
    (lambda L, T: DecompositionStatistics({"text": T.query_mask()}).record(
        "text.blocks.0.attn.lam", torch.rand(2, 1, 8)), "give \\[N\\] or \\[B, N\\]"),
])
def test_bad_input_names_the_problem(layout, text, call, message):
    with pytest.raises(LayoutError if "reading" not in message else ValueError, match=message):
        call(layout, text)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_accumulators_give_the_same_table_on_the_gpu(layout, text):
    tables = []
    for device in ("cpu", "cuda"):
        stats = AttentionStatistics(layout, text)
        stats.record("vision.blocks.0.attn.pattern", random_pattern(2, 3, N, N).to(device).half())
        stats.record("text.blocks.0.attn.pattern", random_pattern(3, 4, 8, 8, causal=True).to(device))
        tables.append(stats.result())
    cpu, gpu = (torch.tensor(table["value"].to_numpy()) for table in tables)
    assert torch.allclose(cpu, gpu, atol=1e-4)


def test_accumulators_on_a_real_model_match_the_captured_maps(tiny):
    """Streaming over two batches equals the statistics of the captured maps of all images."""
    from analysis_lib.stats.collect import collect
    from analysis_lib.model.prompted import build_model
    from analysis_lib.stats.attention_stats import AttentionStatistics, DecompositionStatistics, GridLayout

    model = build_model("ivlp", tiny, ["cat", "dog", "red fox"], "a photo of a {}.", text_depth=2,
                        vision_depth=2)
    images = torch.randn(4, 3, tiny.image_size, tiny.image_size)
    stats, decomposition = AttentionStatistics.for_model(model), DecompositionStatistics.for_model(model)
    collect(model, [(images[:2], None), (images[2:], None)], [stats, decomposition], progress=False)
    table = stats.result().set_index(["tower", "block", "head", "statistic", "reading"])["value"]
    with torch.no_grad(), model.capture("vision.blocks.1.attn.*") as cache:
        model.encode_image(images)
    layout = GridLayout.from_token_layout(model.token_layout("vision"))
    expected = attention_distance(cache["vision.blocks.1.attn.pattern"], layout, "without_prompt").mean((0, 2))
    for head in range(2):
        assert table[("vision", 1, head, "attention_distance", "without_prompt")] == pytest.approx(
            expected[head].item(), rel=1e-5)
    lam = decomposition.result().query("tower == 'vision' and statistic == 'lambda' and block == 1")
    assert lam["value"].to_numpy() == pytest.approx(cache["vision.blocks.1.attn.lam"][..., ~layout.is_prompt].mean((0, 2)).numpy(),
                                                    rel=1e-5)
    eos = stats.result().query("tower == 'text' and block == 0")
    assert eos.groupby("head")["value"].sum().to_numpy() == pytest.approx([1.0, 1.0], rel=1e-5)
