"""The analyses run end to end on a finished run and give tables with the expected identities."""
import numpy as np
import pytest
import torch

from analysis_lib.stats import analyses
from analysis_lib.study.run_folder import load_run


@pytest.fixture(scope="module")
def run(ivlp_run):
    return load_run(ivlp_run[0].output_dir)


def test_block0_proportionality_holds_on_a_trained_run(run):
    images, _ = analyses.first_images(run.test_loader("base"), 4)
    errors = analyses.block0_proportionality(run.model("base"), images)
    assert set(errors) == {"vision", "text"} and max(errors.values()) < 1e-5


def test_decomposition_and_attention_tables(run):
    model = run.model("base")
    loader = run.test_loader("base", batch_size=2)
    table = analyses.decomposition_by_block(model, loader)
    assert set(table.tower) == {"vision", "text"}
    images = torch.cat([x for x, _ in loader])
    with torch.no_grad(), model.capture("vision.blocks.*.attn.lam") as cache:
        model.encode_image(images)
    original = ~model.token_layout("vision").is_prompt           # λ is read at the original tokens' queries
    lam = table.query("tower == 'vision' and statistic == 'lambda'").set_index(["block", "head"])["value"]
    for (block, head), value in lam.items():
        captured = cache[f"vision.blocks.{block}.attn.lam"][:, head, original]
        assert value == pytest.approx(captured.mean().item(), rel=1e-5)
        assert value < 1                                          # the prompts take part of the attention
    stats = analyses.attention_statistics({"CLIP": analyses.zeroshot_twin(model), "prompted": model}, loader)
    fig5 = analyses.reading_table(stats)
    assert set(fig5.reading) == {"CLIP", "W/O", "W"}
    w, wo = (fig5[fig5.reading == s].set_index(["block", "head"]) for s in ("W", "W/O"))
    assert (w.distance <= wo.distance + 1e-6).all()      # prompts and [CLS] sit at distance 0
    eos = analyses.eos_attention_table(stats)
    sums = eos.groupby(["model", "block", "head"]).attention.sum()
    assert sums.to_numpy() == pytest.approx(1.0, rel=1e-5)
    assert set(eos.query("model == 'CLIP'").token_type) >= {"sos", "prompt", "category", "period", "eos"}


def test_token_contributions_and_background(run):
    model = run.model("base")
    loader = run.test_loader("base")
    zeroshot = analyses.zeroshot_twin(model)
    chosen = analyses.fixed_by_prompting(zeroshot, model, loader)
    with torch.no_grad():
        images, labels = (torch.cat(parts) for parts in zip(*loader))
        right = {name: (m(images).argmax(-1) == labels).tolist() for name, m in (("zs", zeroshot), ("pr", model))}
    assert chosen.tolist() == [i for i in range(len(labels)) if right["pr"][i] and not right["zs"][i]]
    result = analyses.token_contributions(model, loader.dataset, torch.tensor([0, 1]))
    assert set(result["vision"].method) == {"relevance", "rollout"}
    prompted = result["vision"].query("model == 'prompted'")
    assert (prompted.kind == "prompt").sum() == 2 * model.config.vision_n_ctx   # each prompt, by both methods
    rollout = result["text"].query("method == 'rollout'").groupby("model").contribution.sum()
    assert rollout.to_numpy() == pytest.approx([1.0, 1.0])      # rollout rows are distributions
    # Summed per token type per sample, the types of a rollout row still add up to 1.
    by_type = result["text_by_type"].query("method == 'rollout'").groupby("model").contribution.sum()
    assert by_type.to_numpy() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="no samples to explain"):
        analyses.token_contributions(model, loader.dataset, torch.tensor([], dtype=torch.long))
    table = analyses.background_similarity(run, model, limit=6)
    assert set(table.feature) == {"k", "v"} and table[["foreground", "background"]].abs().le(1 + 1e-6).all().all()


def test_foreground_share_enrichment_and_the_whole_row(run):
    """The share over the patches times the [CLS] row's patch mass is the share of the whole row
    (the captured attention gives that mass independently); the enrichment is the share over the
    image's foreground fraction; CLIP, the trained model and its control on the same images."""
    models = {"prompted": run.model("base"), "control": run.control("base")}
    table = analyses.foreground_share(run, models, limit=4)
    assert set(table.model) == {"CLIP", "prompted", "control"} and table.share.between(0, 1).all()
    prompted = table[table.model == "prompted"].sort_values(["image", "block", "head"])
    images, _ = analyses.first_images(run.test_loader("base", 4), len(run.sample("base", 4)))
    with torch.no_grad(), models["prompted"].capture("vision.blocks.*.attn.pattern") as cache:
        models["prompted"].encode_image(images)
    grid = models["prompted"].token_layout("vision").grid
    patch_mass = cache.stack("vision", "attn.pattern")[:, :, :, 0, 1:1 + grid * grid].sum(-1)   # [L, B, H]
    expected = prompted.share.to_numpy() * patch_mass.permute(1, 0, 2).flatten().double().numpy()
    assert prompted.share_of_row.to_numpy() == pytest.approx(expected, rel=1e-4)
    fg = torch.cat([f for _, f in analyses.masked_batches(run, grid, 4)]).float().mean(-1)     # [B]
    fraction = np.repeat(fg.numpy(), len(prompted) // len(fg))
    finite = np.isfinite(prompted.enrichment.to_numpy())
    assert prompted.enrichment.to_numpy()[finite] == pytest.approx((prompted.share.to_numpy() / fraction)[finite])


def test_cache_stacks_one_hook_over_blocks(run):
    model = run.model("base")
    images, _ = analyses.first_images(run.test_loader("base"), 2)
    with torch.no_grad(), model.capture("vision.blocks.*.attn.pattern") as cache:
        model.encode_image(images)
    stacked = cache.stack("vision", "attn.pattern")
    assert stacked.shape[0] == len(model.vision_tower.blocks)
    assert torch.equal(stacked[1], cache["vision.blocks.1.attn.pattern"])
    with pytest.raises(KeyError, match="text.blocks.\\*.attn.pattern"):
        cache.stack("text", "attn.pattern")


def test_patch_foreground_reads_trimaps(tmp_path):
    from PIL import Image
    import numpy as np
    trimap = np.full((40, 40), 2, dtype=np.uint8)
    trimap[:20, :20] = 1                                   # top-left quarter is the object
    Image.fromarray(trimap).save(tmp_path / "m.png")
    fg = analyses.patch_foreground(tmp_path / "m.png", image_size=32, grid=4)
    assert fg.reshape(4, 4)[:2, :2].all() and fg.sum() == 4


def test_dataset_summary_and_gallery(data_root):
    from analysis_lib.data import read_dataset
    pets, eurosat = read_dataset("OxfordPets", data_root), read_dataset("EuroSAT", data_root)
    summary = analyses.dataset_summary([pets, eurosat])
    row = summary.set_index("dataset").loc["OxfordPets"]
    assert (row["classes"], row["base"], row["novel"]) == (6, 3, 3)
    assert (row["train images"], row["val images"], row["test images"]) == (36, 18, 12)
    assert row["masks"] and not summary.set_index("dataset").loc["EuroSAT", "masks"]
    gallery = analyses.dataset_gallery(eurosat, max_classes=4)
    captions = [caption for _, caption in gallery]
    assert captions == ["Annual Crop Land (base)", "Highway or Road (base)", "Permanent Crop Land (novel)",
                        "Sea or Lake (novel)"]

