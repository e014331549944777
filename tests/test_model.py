"""The CLIP variants: equivalence with open_clip, the IVLP rule, the decomposition, parameters."""
from dataclasses import replace

import pytest
import torch

from analysis_lib.model.attention import Ablation
from analysis_lib.model.backbone import (ActivationMismatchError, CheckpointError, UnknownModelError,
                                         WeightsNotFoundError, load_backbone)
from analysis_lib.model.prompted import build_model, length_groups
from analysis_lib.model.variants import VariantError
from analysis_lib.stats.attention_stats import block0_deviation

CLASSES = ["cat", "dog", "red fox", "golden retriever"]
TEMPLATE = "a photo of a {}."


def images(backbone, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, backbone.image_size, backbone.image_size, generator=g)


def randomise(model, seed=0):
    """Learned parameters start at zero for biases: give them values so tests see their effect."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.mark.parametrize("size", ["tiny", "vitb16"])
def test_zeroshot_equals_open_clip(size, request):
    backbone = request.getfixturevalue(size)
    model = build_model("zeroshot", backbone, CLASSES, TEMPLATE)
    x = images(backbone)
    clip = backbone.clip
    with torch.no_grad():
        tokens = backbone.tokenizer([TEMPLATE.format(c) for c in CLASSES])   # full 77 tokens
        ref = clip.logit_scale.exp() * clip.encode_image(x, normalize=True) @ \
            clip.encode_text(tokens, normalize=True).T
        ours = model(x)
    assert model.text_tokens.shape[1] < tokens.shape[1]  # the text tower ran on a truncated context
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_truncated_text_equals_full_context(tiny):
    model = build_model("ivlp", tiny, CLASSES, TEMPLATE, text_depth=2, vision_depth=2)
    randomise(model)
    with torch.no_grad():
        short = model.encode_text()
        model.text_tokens = tiny.tokenizer(model.prompt_texts)
        with model.capture([]):          # while a recorder listens: one pass over the tokens as given
            long = model.encode_text()
    torch.testing.assert_close(short, long, atol=1e-6, rtol=1e-5)


LONG_NAMES = ["cat", "dog", "red fox", "golden retriever", "a", "great crested grebe of the lakes",
              "lesser spotted woodpecker", "ox", "bee", "yellow-bellied sapsucker of the north"]


@pytest.mark.parametrize("variant", ["ivlp", "bias", "coop"])
def test_text_by_length_equals_one_pass_and_so_do_gradients(tiny, variant):
    """Prompts grouped by length, each group up to its own longest [EOS]: same features, same gradients."""
    hparams = {"ivlp": {"text_depth": 2, "vision_depth": 2}, "bias": {"bias_text_depth": 2, "bias_vision_depth": 2}, "coop": {}}
    model = randomise(build_model(variant, tiny, LONG_NAMES, TEMPLATE, **hparams[variant]))
    weights = torch.randn(len(LONG_NAMES), tiny.clip.text_projection.shape[1], generator=torch.Generator().manual_seed(1))

    def features_and_grads(one_pass: bool):
        model.zero_grad(set_to_none=True)
        if one_pass:
            with model.capture([]):
                features = model.encode_text()
        else:
            features = model.encode_text()
        (features * weights).sum().backward()
        return features.detach(), {n: p.grad.clone() for n, p in model.text_tower.named_parameters() if p.requires_grad}

    model.group_text(pass_cost=0)                      # one group per distinct length
    lengths = [length for _, _, length in model.text_groups]
    assert len(lengths) > 3 and lengths == sorted(lengths) and lengths[-1] == model.text_tokens.shape[1]
    grouped, grouped_grads = features_and_grads(one_pass=False)
    single, single_grads = features_and_grads(one_pass=True)
    torch.testing.assert_close(grouped, single, atol=1e-6, rtol=1e-5)
    assert grouped_grads.keys() == single_grads.keys() and grouped_grads
    for name in grouped_grads:
        torch.testing.assert_close(grouped_grads[name], single_grads[name], atol=1e-6, rtol=1e-5)


def test_length_groups_trade_padding_against_passes():
    lengths = [5, 5, 5, 6, 6, 20]
    assert length_groups(lengths, pass_cost=0) == [(0, 3, 5), (3, 5, 6), (5, 6, 20)]
    assert length_groups(lengths, pass_cost=1e9) == [(0, 6, 20)]           # one pass, padded to 20
    # 5 and 6 together cost 5 padded positions less than a pass: merged; 20 stays alone (saves 70).
    assert length_groups(lengths, pass_cost=10) == [(0, 5, 6), (5, 6, 20)]


def test_fixed_text_tower_is_known(tiny):
    assert build_model("vision", tiny, CLASSES, TEMPLATE, vision_depth=2).text_is_fixed
    assert build_model("zeroshot", tiny, CLASSES, TEMPLATE).text_is_fixed
    assert not build_model("coop", tiny, CLASSES, TEMPLATE).text_is_fixed
    assert not build_model("bias", tiny, CLASSES, TEMPLATE, bias_text_depth=1, bias_vision_depth=2).text_is_fixed


def test_zero_biases_equal_zeroshot(tiny):
    zs = build_model("zeroshot", tiny, CLASSES, TEMPLATE)
    bias = build_model("bias", tiny, CLASSES, TEMPLATE, bias_text_depth=2, bias_vision_depth=2)
    x = images(tiny)
    with torch.no_grad():
        torch.testing.assert_close(bias(x), zs(x), atol=0, rtol=0)
        randomise(bias)
        assert not torch.allclose(bias(x), zs(x), atol=1e-3)


def test_block0_token_part_is_zeroshot_times_lambda(tiny):
    """Vision: same tokens X in both models. Text: compare on the tokens both share."""
    zs = build_model("zeroshot", tiny, CLASSES, TEMPLATE)
    ivlp = randomise(build_model("ivlp", tiny, CLASSES, TEMPLATE, text_depth=2, vision_depth=2))
    x = images(tiny)
    names = ["*.blocks.0.attn.pattern", "*.blocks.0.attn.lam"]
    with torch.no_grad(), zs.capture(names) as a, ivlp.capture(names) as b:
        zs(x)
        ivlp(x)
    n = a["vision.blocks.0.attn.pattern"].shape[-1]                     # [CLS] + patches
    lam = b["vision.blocks.0.attn.lam"]
    assert (lam[..., :n] < 1).all()
    vision = [a["vision.blocks.0.attn.pattern"], torch.ones(n, dtype=torch.bool),
              b["vision.blocks.0.attn.pattern"], lam, ~ivlp.token_layout("vision").is_prompt]
    assert block0_deviation(*vision) < 1e-6
    vision[3] = torch.ones_like(lam)                                    # without the rescaling it fails
    assert block0_deviation(*vision) > 1e-3
    # Text: "a photo of a" are template words in zero-shot and learned prompts (positions 1..4) here.
    shared = ~ivlp.token_layout("text").is_prompt
    assert shared[1:5].sum() == 0 and shared.sum() == len(shared) - 4
    assert block0_deviation(a["text.blocks.0.attn.pattern"], shared, b["text.blocks.0.attn.pattern"],
                            b["text.blocks.0.attn.lam"], shared) < 1e-6


@pytest.mark.parametrize("variant", ["ivlp", "coop", "vision"])
def test_decomposition_adds_up_and_capture_changes_nothing(tiny, variant):
    depth = {"coop": {}, "vision": {"vision_depth": 2}, "ivlp": {"text_depth": 2, "vision_depth": 2}}
    model = randomise(build_model(variant, tiny, CLASSES, TEMPLATE, **depth[variant]))
    x = images(tiny)
    with torch.no_grad():
        plain = model(x)
        with model.capture() as cache:
            captured = model(x)
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)
    for tower in ("text", "vision"):
        for block in range(2):
            get = lambda p: cache[f"{tower}.blocks.{block}.attn.{p}"]  # noqa: E731
            total = get("pattern") @ get("v")
            torch.testing.assert_close(get("token_part") + get("prompt_part"), total, atol=1e-5, rtol=0)
            lam = get("lam")
            assert (lam > 0).all() and (lam <= 1 + 1e-6).all()
    n_ctx = model.config.text_n_ctx
    if n_ctx:  # causal: prompt i sees [SOS] and prompts 1..i only
        pattern = cache["text.blocks.1.attn.pattern"]
        rows = pattern[:, :, 1:1 + n_ctx]                                  # prompt queries
        allowed = torch.tril(torch.ones(n_ctx, pattern.shape[-1]), diagonal=1).bool()
        assert rows[..., ~allowed].abs().max() == 0


def test_removing_both_effects_gives_zeroshot_image_features(tiny):
    zs = build_model("zeroshot", tiny, CLASSES, TEMPLATE)
    vpt = randomise(build_model("vision", tiny, CLASSES, TEMPLATE, vision_depth=2))
    x = images(tiny)
    with torch.no_grad():
        assert not torch.allclose(vpt(x), zs(x), atol=1e-3)
        with vpt.ablate(Ablation(keep_rescale=False, keep_bias=False)):
            torch.testing.assert_close(vpt(x), zs(x), atol=1e-5, rtol=1e-5)
        with vpt.ablate(Ablation(keep_rescale=True, keep_bias=False)):
            rescale_only = vpt(x)
        with vpt.ablate(Ablation(keep_rescale=False, keep_bias=True)):
            bias_only = vpt(x)
    assert not torch.allclose(rescale_only, bias_only, atol=1e-4)


def test_an_ablation_acts_only_in_its_towers(tiny):
    model = randomise(build_model("ivlp", tiny, CLASSES, TEMPLATE, text_depth=2, vision_depth=2))
    x = images(tiny)
    none = Ablation(keep_rescale=False, keep_bias=False)
    with torch.no_grad():
        text, image = model.encode_text(), model.encode_image(x)
        with model.ablate(replace(none, towers=("vision",))):
            torch.testing.assert_close(model.encode_text(), text)
            assert not torch.allclose(model.encode_image(x), image, atol=1e-4)
        with model.ablate(replace(none, towers=("text",))):
            torch.testing.assert_close(model.encode_image(x), image)
            assert not torch.allclose(model.encode_text(), text, atol=1e-4)


def test_mean_ablation_of_one_image_is_that_image(tiny):
    """The bias term replaced by its mean over one image is that image's own bias term: the
    features as trained; over two images each image gets the pair's mean, so they change."""
    from analysis_lib.stats.causal import bias_term_means
    model = randomise(build_model("ivlp", tiny, ["cat"], TEMPLATE, text_depth=2, vision_depth=2))
    x = images(tiny)
    with torch.no_grad():
        trained = model.encode_image(x[:1])
        with model.ablate(Ablation(bias_means=bias_term_means(model, [(x[:1], None)]))):
            torch.testing.assert_close(model.encode_image(x[:1]), trained, atol=1e-5, rtol=1e-5)
        pair = bias_term_means(model, [(x, None)])
        with model.ablate(Ablation(bias_means=pair)):
            assert not torch.allclose(model.encode_image(x[:1]), trained, atol=1e-4)
        assert set(pair) == {f"{t}.blocks.{i}" for t in ("text", "vision") for i in range(2)}
        assert pair["vision.blocks.0"].shape[0] == tiny.clip.visual.transformer.resblocks[0].attn.num_heads


def test_depth_limited_ablation_acts_only_below_the_prompt_depth(tiny):
    """Vision prompts in block 0 only (depth 1 of 2): removing both effects there leaves block 1's
    input on the original tokens as zero-shot's, while block 1 still sees the prompt slots."""
    zs = build_model("zeroshot", tiny, CLASSES, TEMPLATE)
    vpt = randomise(build_model("vision", tiny, CLASSES, TEMPLATE, vision_depth=1))
    x = images(tiny)
    n = tiny.clip.visual.positional_embedding.shape[0]
    with torch.no_grad():
        with zs.capture("vision.blocks.1.resid_pre") as a:
            zs_features = zs.encode_image(x)
        limited = Ablation(keep_rescale=False, keep_bias=False, below_prompt_depth=True)
        with vpt.ablate(limited), vpt.capture("vision.blocks.1.resid_pre") as b:
            limited_features = vpt.encode_image(x)
        with vpt.ablate(Ablation(keep_rescale=False, keep_bias=False)):
            all_blocks = vpt.encode_image(x)
    torch.testing.assert_close(b["vision.blocks.1.resid_pre"][:, :n], a["vision.blocks.1.resid_pre"])
    torch.testing.assert_close(all_blocks, zs_features, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(limited_features, zs_features, atol=1e-4)


def test_token_types_come_from_the_tokenised_pieces(tiny):
    """"pho" (inside "photo"), names with '.', multi-token names, templates after the class."""
    def types(variant, names, template, **kw):
        model = build_model(variant, tiny, names, template, **kw)
        layout = model.token_layout("text")
        return [[t for t in layout.token_types[c] if t != "pad"] for c in range(len(names))]
    food = "a photo of {}, a type of food."
    after = ["template"] * 5 + ["period", "eos"]                        # ", a type of food" then "." [EOS]
    assert types("zeroshot", ["pho"], food) == [["sos"] + ["prompt"] * 3 + ["category"] + after]
    # "mr. potato head" is mr . potato head: four category tokens, its '.' is not the period.
    assert types("zeroshot", ["mr. potato head"], food) == [["sos"] + ["prompt"] * 3 + ["category"] * 4 + after]
    assert types("ivlp", ["pho", "st. bernard"], TEMPLATE, text_depth=2, vision_depth=2) == [
        ["sos"] + ["prompt"] * 4 + ["category"] + ["period", "eos"],
        ["sos"] + ["prompt"] * 4 + ["category"] * 3 + ["period", "eos"]]
    # Two learned tokens: "of a" stay as fixed template words.
    assert types("coop", ["pho"], TEMPLATE, text_n_ctx=2)[0][:6] == ["sos", "prompt", "prompt", "template",
                                                                     "template", "category"]
    assert types("zeroshot", ["pho"], "{} texture.") == [["sos", "category", "template", "period", "eos"]]
    # The end of the name merges with the '.' after it ("!." and ".." are one token each): the
    # merged token holds the end of the class name, so it is typed category.
    assert types("zeroshot", ["yahoo!", "Jr."], "{}.") == [["sos", "category", "category", "eos"]] * 2
    assert types("ivlp", ["Jr."], TEMPLATE, text_depth=2, vision_depth=2) == [
        ["sos"] + ["prompt"] * 4 + ["category"] * 2 + ["eos"]]
    assert types("zeroshot", ["Jr."], "a photo of {}, a type of food.") == [
        ["sos"] + ["prompt"] * 3 + ["category"] * 2 + after[1:]]            # ".," is one token


@pytest.mark.slow   # 91 models of 1,000 classes: about 30 s
def test_every_imagenet_class_name_is_typed_under_every_template(tiny):
    """All 1,000 names of open_clip's ImageNet list (six end in ')', which merges with '.') under
    OpenAI's 80 ImageNet templates, the 11 datasets' templates and IVLP's learned context: each
    prompt gets one type per position, the class's tokens (at least one) between the words
    before and after it, and the words after it keep their types wherever nothing merged."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
    from analysis_lib import data
    templates = {t("{}") for t in OPENAI_IMAGENET_TEMPLATES} | {data.get_spec(d).template for d in data.PAPER_DATASETS}
    models = [build_model("zeroshot", tiny, list(IMAGENET_CLASSNAMES), t) for t in sorted(templates)]
    models.append(build_model("ivlp", tiny, list(IMAGENET_CLASSNAMES), TEMPLATE, text_depth=2, vision_depth=2))
    merged = 0
    for model in models:
        layout = model.token_layout("text")
        for c, types in enumerate(layout.token_types):
            eos = int(layout.eos_index[c])
            assert types[0] == "sos" and types[eos] == "eos" and "pad" not in types[:eos]
            assert "category" in types
            body = [t for t in types[:eos] if t != "sos"]
            first, last = body.index("category"), len(body) - body[::-1].index("category")
            assert set(body[last:]) <= {"template", "period"} and "category" not in body[:first]
            merged += model.prompt_texts[c].endswith(").") and "period" not in types
    assert merged >= 6          # "kite (bird of prey)." and the others: typed, not refused


def test_gradients_reach_only_trainable_parameters(tiny):
    model = build_model("ivlp", tiny, CLASSES, TEMPLATE, text_depth=2, vision_depth=2)
    loss = torch.nn.functional.cross_entropy(model(images(tiny)), torch.tensor([0, 1]))
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert set(model.trainable_state()) == {"text_tower.prompts.vectors", "vision_tower.prompts.vectors"}


def test_ivlp_parameter_count_at_vitb16(vitb16):
    model = build_model("ivlp", vitb16, CLASSES, TEMPLATE, text_n_ctx=4, vision_n_ctx=4,
                        text_depth=9, vision_depth=9)
    assert model.n_trainable == 9 * 4 * 512 + 9 * 4 * 768 == 46_080
    bias = build_model("bias", vitb16, CLASSES, TEMPLATE, bias_where="both")
    assert bias.n_trainable == 12 * 2 * (512 + 768)


def test_text_prompts_start_from_template_words(tiny):
    model = build_model("coop", tiny, CLASSES, TEMPLATE, text_n_ctx=2)
    assert model.prompt_texts[0] == "a photo of a cat."
    words = tiny.clip.token_embedding(model.text_tokens[0, 1:3])
    torch.testing.assert_close(model.text_tower.prompts.vectors[0], words)
    assert model.token_layout("text").token_types[0][:6] == ["sos", "prompt", "prompt", "template",
                                                              "template", "category"]
    random_init = build_model("coop", tiny, CLASSES, TEMPLATE, text_n_ctx=6)
    assert random_init.prompt_texts[0] == "X X X X X X cat."


def test_vision_variant_text_follows_the_reference_vpt_trainer(tiny):
    """The reference VPT trainer (MaPLe's code) prompts "a photo of a {}." on every dataset;
    text_template chooses another, and the dataset's template stays with zero-shot."""
    pets = "a photo of a {}, a type of pet."
    assert build_model("vision", tiny, CLASSES, pets, vision_depth=2).prompt_texts[0] == "a photo of a cat."
    assert build_model("zeroshot", tiny, CLASSES, pets).prompt_texts[0] == "a photo of a cat, a type of pet."
    own = build_model("vision", tiny, CLASSES, pets, vision_depth=2, text_template="itap of a {}.")
    assert own.prompt_texts[0] == "itap of a cat."
    with pytest.raises(VariantError, match="text_template must hold one {} for the class name"):
        build_model("vision", tiny, CLASSES, pets, vision_depth=2, text_template="a photo")


def test_save_load_reproduces_logits_bit_for_bit(tiny, tmp_path):
    a = randomise(build_model("ivlp", tiny, CLASSES, TEMPLATE, text_depth=2, vision_depth=2), seed=1)
    path = tmp_path / "prompts.safetensors"
    a.save_trainable(path)
    b = build_model("ivlp", tiny, CLASSES, TEMPLATE, text_depth=2, vision_depth=2)
    b.load_trainable(path)
    x = images(tiny)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    wrong = build_model("vision", tiny, CLASSES, TEMPLATE, vision_depth=2)
    with pytest.raises(VariantError, match="holds"):
        wrong.load_trainable(path)


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.long(), "holds torch.int64 values, but learned parameters are floating point"),
    (lambda t: torch.full_like(t, float("nan")), "holds NaN or infinite values"),
])
def test_load_trainable_refuses_wrong_values_of_the_right_shape(tiny, tmp_path, damage, message):
    from safetensors.torch import save_file
    model = build_model("ivlp", tiny, CLASSES, TEMPLATE, text_depth=2, vision_depth=2)
    state = model.trainable_state()
    name = next(iter(state))
    path = tmp_path / "damaged.safetensors"
    save_file({**state, name: damage(state[name])}, str(path))
    with pytest.raises(VariantError) as info:
        model.load_trainable(path)
    assert str(info.value).startswith(f"{path}: {name} ") and message in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(variant="prompt"), "unknown variant 'prompt'; choose one of zeroshot, coop"),
    (dict(variant="ivlp", text_n_ctx=0), "text_n_ctx must be in 1..32"),
    (dict(variant="ivlp", text_depth=2, vision_depth=3), r"vision_depth must be in 1..2 for this backbone"),
    (dict(variant="ivlp", text_depth="9"), "text_depth must be an integer, got '9' \\(str\\)"),
    (dict(variant="vision", text_n_ctx=4), "variant 'vision' does not take text_n_ctx"),
    (dict(variant="bias", bias_where="qkv"), "bias_where must be one of attn, mlp, both"),
])
def test_bad_variant_arguments(tiny, kwargs, message):
    variant = kwargs.pop("variant")
    with pytest.raises(VariantError, match=message):
        build_model(variant, tiny, CLASSES, TEMPLATE, **kwargs)


def test_bad_backbone_arguments(tmp_path):
    with pytest.raises(UnknownModelError, match="unknown model 'ViT-Q-99'"):
        load_backbone("ViT-Q-99")
    with pytest.raises(WeightsNotFoundError, match="neither a checkpoint file nor a known tag"):
        load_backbone("tiny-clip", str(tmp_path / "missing.pt"))


def test_text_file_as_checkpoint_names_the_file(tiny, tmp_path):
    text = tmp_path / "weights.txt"
    text.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=f"pretrained={text} is not a checkpoint"):
        load_backbone("tiny-clip", str(text))
    other = tmp_path / "demo.pt"  # a real checkpoint of another architecture
    torch.save({"visual.conv1.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match=f"pretrained={other}: open_clip cannot load it into tiny-clip"):
        load_backbone("tiny-clip", str(other))


def test_tag_trained_with_quickgelu_needs_the_quickgelu_model(tiny, tmp_path, monkeypatch):
    """A tag's weights (here a local checkpoint in a fake offline Hugging Face cache) load into the
    model with the tag's activation; the same weights in the GELU twin are refused, naming the twin."""
    import huggingface_hub.constants
    import open_clip
    from safetensors.torch import save_file
    from analysis_lib.model import backbone
    gelu_cfg = {k: v for k, v in open_clip.get_model_config("tiny-clip").items() if k != "quick_gelu"}
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "tiny-gelu", gelu_cfg)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "tiny-gelu-quickgelu", {**gelu_cfg, "quick_gelu": True})
    tag = {"hf_hub": "fake/tiny-openai/", "quick_gelu": True}  # as open_clip lists OpenAI's tags
    for name in ("tiny-gelu", "tiny-gelu-quickgelu"):
        monkeypatch.setitem(open_clip.pretrained._PRETRAINED, name, {"openai": tag})
    snapshot = tmp_path / "models--fake--tiny-openai" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "models--fake--tiny-openai" / "refs").mkdir()
    (tmp_path / "models--fake--tiny-openai" / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in tiny.clip.state_dict().items()},
              str(snapshot / "open_clip_model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(backbone, "_reachable", lambda host, timeout=3.0: False)

    with pytest.raises(ActivationMismatchError) as info:
        load_backbone("tiny-gelu", "openai")
    assert str(info.value) == ("model 'tiny-gelu' uses GELU, but the 'openai' weights were trained with "
                               "QuickGELU and would compute other features; use model "
                               "'tiny-gelu-quickgelu' with pretrained 'openai'")
    loaded = load_backbone("tiny-gelu-quickgelu", "openai")
    x = images(tiny)
    with torch.no_grad():
        assert torch.equal(loaded.clip.encode_image(x), tiny.clip.encode_image(x))
    # The check matters: the GELU twin with the same weights computes other features.
    gelu = open_clip.create_model("tiny-gelu", pretrained=str(snapshot / "open_clip_model.safetensors"))
    with torch.no_grad():
        assert not torch.allclose(gelu.encode_image(x), tiny.clip.encode_image(x))


def test_uncached_tag_offline_fails_at_once_naming_the_file(monkeypatch, tmp_path):
    import huggingface_hub.constants
    from analysis_lib.model import backbone
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(backbone, "_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(WeightsNotFoundError) as info:
        load_backbone("ViT-B-16-quickgelu", "openai")
    message = str(info.value)
    assert "not cached and huggingface.co cannot be reached" in message
    assert "timm/vit_base_patch16_clip_224.openai/open_clip_pytorch_model.bin" in message
    assert "pretrained=/path/to/checkpoint" in message


def test_local_checkpoint_loads_through_the_real_path(tiny, tmp_path):
    """A checkpoint file in open_clip's format loads by path, as real weights do."""
    path = tmp_path / "tiny.pt"
    torch.save(tiny.clip.state_dict(), path)
    again = load_backbone("tiny-clip", str(path))
    x = images(tiny)
    with torch.no_grad():
        assert torch.equal(again.clip.encode_image(x), tiny.clip.encode_image(x))
