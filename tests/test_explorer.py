"""The attention explorer: its tables on a trained run, the quantised data the book ships, the live widgets."""
import base64
import datetime
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis_lib.report import explorer_page, live_explorer, servers
from analysis_lib.stats import causal, explorer_data
from analysis_lib.study.run_folder import load_run


@pytest.fixture(scope="module")
def run(ivlp_run):
    return load_run(ivlp_run[0].output_dir)


@pytest.fixture(scope="module")
def tables(run):
    return explorer_data.explorer_tables(run, 8)


def test_tables_hold_the_three_panels_of_every_block_and_head(run, tables):
    cls, share = tables["cls_attention"], tables["prompt_share"]
    clip, wo, w = (cls[explorer_data.PANELS.index(p)] for p in ("CLIP", "W/O", "W"))
    assert cls.shape == (3, 8, 2, 2, 16) and tables["cls_rollout"].shape == (3, 8, 2, 16)
    assert list(tables["images"].group) == ["base"] * 4 + ["novel"] * 4
    # W/O is W without the prompt keys, renormalised over [CLS] + patches: W's patches / (1 - prompts' share).
    np.testing.assert_allclose(wo, w / (1 - share[..., None]), rtol=1e-5)
    assert (w.sum(-1) + share < 1 + 1e-5).all() and (clip.sum(-1) < 1 + 1e-5).all()
    # Block 0 sees the same tokens with and without prompts, so W/O equals CLIP there (the IVLP rule);
    # later blocks see tokens the prompts changed.
    np.testing.assert_allclose(wo[:, 0], clip[:, 0], atol=1e-6)
    assert not np.allclose(clip[:, 1], wo[:, 1], atol=1e-3)
    assert ((tables["lam"] > 0) & (tables["lam"] <= 1)).all() and ((share > 0) & (share < 1)).all()
    # Rollout after block 0 is block 0's head-averaged attention with the residual mixed in.
    w0 = w[:, 0].mean(1)                                              # [I, G²]
    np.testing.assert_allclose(tables["cls_rollout"][2, :, 0], w0 / 2, rtol=1e-4)
    eos = tables["eos_attention"].groupby(["model", "classname", "block", "head"]).attention.sum()
    assert eos.to_numpy() == pytest.approx(1.0, rel=1e-5)            # the [EOS] row over its tokens
    prompted = tables["eos_attention"].query("model == 'prompted' and token_type == 'prompt'")
    assert len(prompted) and prompted.token.str.fullmatch(r"\[P\d+\]").all()   # learned prompts, not words
    assert set(tables["eos_attention"].classname) == set(tables["images"].classname)


def test_tables_are_saved_next_to_the_run_and_read_back(tables, tmp_path):
    folder = explorer_data.write_explorer_tables(tables, tmp_path / "explorer")
    back = explorer_data.read_explorer_tables(folder)
    assert set(back) == set(tables)
    np.testing.assert_array_equal(back["cls_attention"], tables["cls_attention"])
    pd.testing.assert_frame_equal(back["eos_attention"], tables["eos_attention"], check_dtype=False, rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="no explorer tables"):
        explorer_data.read_explorer_tables(tmp_path)


def _array(packed: dict, key: str, shape) -> np.ndarray:
    dtype = np.uint8 if key == "codes" else np.float32
    return np.frombuffer(base64.b64decode(packed[key]), dtype=dtype).reshape(shape)


def test_quantised_data_reconstruct_the_attention_within_the_tolerance(tables, tmp_path):
    """Decode the dataset file as the page's script does and compare with the tables."""
    path = explorer_page.write_dataset(tmp_path, "Pets", tables)
    text = path.read_text()
    packed = json.loads(text[text.index("] = ") + 4:].rstrip(";\n"))
    cls, rollout = tables["cls_attention"], tables["cls_rollout"]
    P, I, L, H, G2 = cls.shape
    codes = _array(packed["cls"], "codes", (2, I, L, H, G2))
    scale = _array(packed["cls"], "scale", (P, I, L, H))
    for p, c in enumerate(packed["code_panel"]):
        error = np.abs(explorer_page.dequantise_rows(codes[c], scale[p]) - cls[p])
        assert (error <= explorer_page.TOLERANCE * cls[p].max(-1, keepdims=True) + 1e-7).all(), packed["panels"][p]
    roll = explorer_page.dequantise_rows(_array(packed["rollout"], "codes", rollout.shape),
                                         _array(packed["rollout"], "scale", rollout.shape[:-1]))
    assert (np.abs(roll - rollout) <= explorer_page.TOLERANCE * rollout.max(-1, keepdims=True) + 1e-7).all()
    eos = tables["eos_attention"]
    for classname, models in packed["text"].items():
        for model, t in models.items():
            rows = eos[(eos.classname == classname) & (eos.model == model)].sort_values(["block", "head", "position"])
            exact = rows.attention.to_numpy().reshape(L, -1, len(t["tokens"]))
            got = explorer_page.dequantise_rows(_array(t["attention"], "codes", exact.shape),
                                                _array(t["attention"], "scale", exact.shape[:-1]))
            assert (np.abs(got - exact) <= explorer_page.TOLERANCE * exact.max(-1, keepdims=True) + 1e-7).all()
    assert [i["group"] for i in packed["images"]] == ["base"] * 4 + ["novel"] * 4
    assert text.startswith("(window.attentionExplorerData") and "</" not in text


def test_quantisation_error_is_half_a_step_of_the_row_maximum():
    rows = np.random.default_rng(0).dirichlet(np.ones(196), size=(1000,)).astype(np.float32)
    codes, scale = explorer_page.quantise_rows(rows)
    error = np.abs(explorer_page.dequantise_rows(codes, scale) - rows) / scale[:, None]
    assert error.max() <= explorer_page.TOLERANCE + 1e-7 and error.max() > 0.9 * explorer_page.TOLERANCE
    with pytest.raises(explorer_page.ExplorerDataError, match="non-negative"):
        explorer_page.quantise_rows(-rows)


def test_packing_names_what_is_wrong(tables):
    broken = dict(tables, cls_attention=tables["cls_attention"].copy())
    broken["cls_attention"][1] = tables["cls_attention"][0]                   # CLIP's rows as W/O
    with pytest.raises(explorer_page.ExplorerDataError, match="W/O rows are not the W rows rescaled"):
        explorer_page.pack_dataset("Pets", broken)
    with pytest.raises(explorer_page.ExplorerDataError, match=r"Pets: cls_attention must be"):
        explorer_page.pack_dataset("Pets", dict(tables, cls_attention=tables["cls_attention"][0]))
    with pytest.raises(explorer_page.ExplorerDataError, match="lack one of the models"):
        explorer_page.pack_dataset("Pets", dict(tables, eos_attention=tables["eos_attention"].query("model == 'CLIP'")))


def test_vitb16_dataset_file_size_is_calculated_from_the_packer():
    small = explorer_page.dataset_bytes(2, blocks=2, heads=2, grid=4, text_blocks=2, text_heads=2, n_tokens=5, image_size=32)
    codes = 2 * 2 * 2 * 2 * 16                                        # two coded panels, I × L × H × G²
    assert small > codes * 4 / 3
    vitb16 = explorer_page.dataset_bytes(8)
    assert 2 * 8 * 12 * 12 * 196 * 4 / 3 < vitb16 < 2e6


def test_query_rows_are_the_patch_rows(run, tables):
    """Query 0 is the [CLS] row of the book's tables; query q the row of patch q - 1, with the same
    W/O identity; outside the grid it is refused."""
    items = explorer_data.explorer_items(run, 8)
    path, group, label = items[0][0].path, items[0][1], items[0][0].label
    cls = explorer_data.image_tables(run, [path], [(group, label)])
    np.testing.assert_allclose(cls["cls_attention"][:, 0], tables["cls_attention"][:, 0], atol=1e-6)
    patch = explorer_data.image_tables(run, [path], [(group, label)], query=3)
    w, wo = (patch["cls_attention"][explorer_data.PANELS.index(p)] for p in ("W", "W/O"))
    np.testing.assert_allclose(wo, w / (1 - patch["prompt_share"][..., None]), rtol=1e-5)
    assert not np.allclose(patch["cls_attention"], cls["cls_attention"])
    with pytest.raises(ValueError, match="neither \\[CLS\\] \\(0\\) nor one of the 16 patches"):
        explorer_data.image_tables(run, [path], [(group, label)], query=17)


def _png(size=(40, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((*size, 3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(name: str, content: bytes) -> tuple:
    return ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def test_live_explorer_widgets_change_the_views(run, tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "OxfordPets" / "ivlp" / "seed1"
    shutil.copytree(run.settings.output_dir, run_dir)
    live = live_explorer.LiveExplorer(root)
    assert live.run_choice.options == (("OxfordPets/ivlp/seed1", str(run_dir)),)
    first = explorer_data.explorer_items(run, 8)[0][0]
    assert live.tables is not None and live.source == first.path and live.classname.value == ("base", first.label)
    assert {g for _, (_, g, _) in live.image.options} == {"base", "novel"}          # both groups offered, marked

    def views():
        return [live.panels[p].value for p in (*explorer_data.PANELS, live_explorer.DIFFERENCE)] + [
            live.numbers.value, live.text.value, live.readout.value]
    start = views()
    assert start[0] == start[1] != start[2]           # block 0: W/O is CLIP (the IVLP rule), W differs
    for widget, value in ((live.block, 1), (live.head, 1), (live.mean_heads, True), (live.view, "rollout"),
                          (live.text_head, 1)):
        before = views()
        widget.value = value
        if widget is live.text_head:                                  # rollout averages heads: switch back first
            assert views() == before
            live.view.value = "attention"
            live.mean_heads.value = False
            before = views()
            live.text_head.value = 0
        assert views() != before, widget.description
        if widget is live.block:
            assert len(set(views()[:4])) == 4                         # past block 0 the four panels differ
    assert "rollout has no head" in live_explorer_readout(live, "rollout")
    before = views()
    live.query_grid.children[2].click()                               # patch 2 as the query
    assert live.query.value == 3 and "patch 2" in live.readout.value and views()[:4] != before[:4]
    live.overview.children[0].children[1].click()                     # head 0 from the overview
    assert live.head.value == 0 and "head 0" in live.readout.value
    # The ablation table is the library's top classes under the causal test's ablation.
    trained = live.top.value
    live.removal.value = "bias term removed"
    expected = live_explorer.top_classes(run, first.path, "base", ("bias term removed", causal.ALL_BLOCKS))
    assert live.top.value != trained and live.top.value == live_explorer.top_html(expected, ("bias term removed", causal.ALL_BLOCKS))
    novel = next(v for _, v in live.image.options if v[1] == "novel")
    before = views()
    live.image.value = novel                                          # another test image, its own class
    assert views() != before and live.classname.value == novel[1:]
    before = views()
    live.classname.value = ("novel", (novel[2] + 1) % len(run.splits["novel"].classnames))   # only the text changes
    after = views()
    assert after[:4] == before[:4] and after[5] != before[5]
    before = views()
    live.upload.value = _upload("mine.png", _png())
    assert "Showing your image mine.png" in live.message.value and views()[:4] != before[:4]
    live.upload.value = _upload("notes.txt", b"not an image")
    assert "notes.txt is not an image" in live.message.value


def live_explorer_readout(live, view: str) -> str:
    live.view.value = view
    text = live.readout.value
    live.view.value = "attention"
    return text


def test_live_explorer_names_what_it_cannot_open(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    live = live_explorer.LiveExplorer(tmp_path, tmp_path / "not_a_run")
    assert "Cannot open" in live.message.value and "not a finished run folder" in live.message.value
    assert live.tables is None
    empty = live_explorer.LiveExplorer(tmp_path / "nothing_here")
    assert "No finished runs of prompted variants" in empty.message.value


def test_servers_start_kernels_in_the_repository_and_refuse_a_missing_run(tmp_path, monkeypatch, capsys):
    """`make lab` / `make explore`: notebooks' relative paths mean what they mean under papermill
    (kernels start in the root, not in notebooks/); a RUN that is no folder is named, exit code 2."""
    kernels = servers.RepositoryKernels(root_dir=str(tmp_path))
    assert kernels.cwd_for_path("notebooks/live_explorer.ipynb") == str(tmp_path)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(SystemExit) as exit_:
        servers.main(["explore", "--runs-root", str(tmp_path), "--run", str(tmp_path / "no_such_run")])
    assert exit_.value.code == 2 and "no_such_run: no such folder" in capsys.readouterr().err
    command, url = servers.explore_command(tmp_path, 8899)
    assert "--template=offline" in command and url == "http://127.0.0.1:8899/"
    assert (servers.JUPYTER_DATA / "voila" / "templates" / "offline" / "index.html.j2").is_file()
