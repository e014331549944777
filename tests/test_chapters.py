"""Every chapter's numbers by value: what a chapter function states equals this test's own
computation from the per-run tables of a miniature finished experiment (miniature_study.py),
runs picked by the experiment's analysed variant; and the book's number formats."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis_lib.report import chapters
from analysis_lib.report.chapter import AVERAGE
from analysis_lib.report.chapters import open_page
from analysis_lib.report.numbers import informative, mean_std, over_seeds, significant, signed
from analysis_lib.stats import per_run
from analysis_lib.stats.claims import experiment_claims
from analysis_lib.study.run_record import harmonic_mean
from miniature_study import ANALYSED, DATASETS, SEEDS, write_study


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_root):
    experiment = write_study(tmp_path_factory.mktemp("mini"), data_root)
    return experiment, experiment_claims(experiment)


def deep(experiment, name):
    """Per-run table ``name`` of the analysed variant (the attention table has other variants' rows too)."""
    table = per_run.load_table(experiment, name)
    assert name != "attention" or {"deep", "shallow"} <= set(table.variant_name)
    return table[table.variant_name == ANALYSED]


def seed_spread(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """mean and sample std over seeds of each seed's mean, by ``by`` (written out, not over_seeds)."""
    out = {}
    for key, part in frame.groupby(by):
        per_seed = np.array([part[part.seed == s][value].mean() for s in SEEDS])
        out[key] = (per_seed.mean(), per_seed.std(ddof=1))
    return out


def test_decomposition_states_lambda_of_the_analysed_variant(study):
    experiment, claims = study
    page = chapters.decomposition(experiment, claims)
    lam = deep(experiment, "decomposition").query("statistic == 'lambda'")
    expected = seed_spread(lam, ["tower", "block"], "value")
    got = page.tables["lambda_per_block"].set_index(["tower", "block"])
    for (tower, block), (mean, std) in expected.items():
        assert got.loc[(tower, block), "lambda"] == pytest.approx(mean)
        assert got.loc[(tower, block), "lambda_std"] == pytest.approx(std)
    last_vision = expected[("vision", 1)]
    assert page.numbers["lambda_last_vision"] == mean_std(*last_vision)
    assert page.numbers["lambda_last_vision"] in page.answer
    block0 = deep(experiment, "block0")
    assert page.tables["block0"].deviation.max() == pytest.approx(block0.deviation.max())


def test_distance_gap_is_w_without_minus_w_over_seeds(study):
    experiment, claims = study
    page = chapters.distance_entropy(experiment, claims)
    attention = deep(experiment, "attention")
    vision = attention[(attention.tower == "vision") & (attention.model == "prompted")
                       & (attention.statistic == "attention_distance")]
    wide = vision.pivot_table(index=["dataset", "seed", "block", "head"], columns="reading", values="value")
    gap = (wide["without_prompt"] - wide["with_prompt"]).groupby(level="seed").mean()
    assert page.numbers["prompt_distance_gap"] == mean_std(gap.mean(), gap.std(), sign=True)
    assert f"{page.numbers['prompt_distance_gap']} px" in page.answer
    clip = attention[(attention.tower == "vision") & (attention.model == "CLIP")
                     & (attention.statistic == "attention_entropy")]
    summary = page.tables["distance_entropy_summary"].set_index("reading")
    assert summary.loc["CLIP", "entropy"] == pytest.approx(clip.groupby("seed").value.mean().mean())


def test_causal_summary_and_reference(study):
    experiment, claims = study
    page = chapters.causal_ablation(experiment, claims)
    causal = deep(experiment, "causal_ablation")
    expected = seed_spread(causal, ["form", "ablation", "tower"], "hm")
    summary = page.tables["causal_summary"].set_index(["form", "ablation", "tower"])
    for key, (mean, std) in expected.items():
        assert summary.loc[key, "hm"] == pytest.approx(mean) and summary.loc[key, "hm_std"] == pytest.approx(std)
    both = causal[causal.tower == "both"]
    assert page.numbers["hm_as_trained"] == significant(both[both.ablation == "as trained"].hm.mean())


def test_foreground_eos_background_and_contributions(study):
    experiment, claims = study
    share = deep(experiment, "foreground_share")
    got = chapters.cls_foreground(experiment, claims).tables["cls_foreground"].set_index(["model", "block"])
    for key, (mean, std) in seed_spread(share, ["model", "block"], "enrichment").items():
        assert got.loc[key, "enrichment"] == pytest.approx(mean) and got.loc[key, "enrichment_std"] == pytest.approx(std)
    attention = deep(experiment, "attention")
    eos = attention[attention.statistic == "eos_to_prompt"]
    summary = chapters.eos_attention(experiment, claims).tables["eos_summary"].set_index(["model", "token_type"])
    for model in ("CLIP", "prompted"):
        per_seed = eos[eos.model == model].groupby("seed").value.mean()
        assert summary.loc[(model, "prompt"), "attention"] == pytest.approx(per_seed.mean())
        assert summary.loc[(model, "prompt"), "attention_std"] == pytest.approx(per_seed.std())
    background = deep(experiment, "background_similarity")
    got = chapters.prompts_as_background(experiment, claims).tables["background_summary"].set_index(
        ["dataset", "feature"])
    expected = background[background.feature == "k"].groupby("seed").background.mean()
    assert got.loc[("OxfordPets", "k"), "background"] == pytest.approx(expected.mean())
    contributions = deep(experiment, "contributions")
    page = chapters.token_contributions(experiment, claims)
    assert page.numbers["n_explained"] == str(3 * len(DATASETS) * len(SEEDS))
    text = page.tables["contributions_text"].set_index(["method", "model", "token_type"]).contribution
    rows = contributions[(contributions.tower == "text") & (contributions.method == "relevance")
                         & (contributions.model == "prompted") & (contributions.token_type == "category")]
    assert text[("relevance", "prompted", "category")] == pytest.approx(rows.contribution.mean())


def test_bias_tuning_and_results_name_the_best_variants(study):
    experiment, claims = study
    metrics = per_run.run_metrics(experiment)
    # Average row: per seed, the mean base and novel over datasets; HM of their means over seeds.
    per_seed = metrics.groupby(["variant_name", "seed"])[["base", "novel"]].mean().groupby("variant_name").mean()
    hm = pd.Series(harmonic_mean(per_seed.base, per_seed.novel), index=per_seed.index)
    page = chapters.bias_tuning(experiment, claims)
    assert page.numbers["best_bias"] == hm[["bias_a", "bias_b"]].idxmax()
    assert page.numbers["best_bias_hm"].startswith(significant(hm[page.numbers["best_bias"]], 2)[:2])
    assert f"<strong>{page.numbers['best_bias']}</strong>" in page.answer
    summary = chapters.results(experiment, claims).tables["results_summary"].set_index("dataset")
    assert summary.loc[AVERAGE, "best variant"] == hm.idxmax()
    for dataset in DATASETS:
        part = metrics[metrics.dataset == dataset].groupby("variant_name")[["base", "novel"]].mean()
        best = pd.Series(harmonic_mean(part.base, part.novel), index=part.index).idxmax()
        assert summary.loc[dataset, "best variant"] == best
    zero = hm["zeroshot"]
    assert summary.loc[AVERAGE, "gain (points)"] == signed(hm[hm.idxmax()] - zero)


def test_answers_quote_the_claims_table(study):
    experiment, claims = study
    measured = set(claims.claim)
    assert measured, "the miniature study measures no claim"
    page = chapters.claims_page(experiment, claims)
    assert page.shown["claims"].content.data.count("<tr>") == len(measured)  # a row per claim (the header has a style)
    for claim_id, chapter in chapters.CHAPTER_OF.items():
        if claim_id not in measured:
            continue
        average = claims[(claims.claim == claim_id) & (claims.dataset == AVERAGE)].iloc[0]
        answer = chapters.CHAPTERS[chapter](experiment, claims).answer
        assert signed(average.effect) in answer and average.verdict in answer, claim_id


def test_open_page_writes_the_tables_and_shows_the_answer(study, tmp_path, monkeypatch):
    experiment, claims = study
    claims.to_csv(tmp_path / "claims.csv", index=False)
    shown = []
    monkeypatch.setattr(chapters, "display", shown.append)
    monkeypatch.setattr("analysis_lib.report.chapter.display", shown.append)
    page = open_page("decomposition", str(experiment.path), str(tmp_path))
    back = pd.read_csv(tmp_path / "lambda_per_block.csv")
    assert back["lambda"].to_numpy() == pytest.approx(page.tables["lambda_per_block"]["lambda"].to_numpy())
    page.show("lambda")
    page.show("block0")
    text = [getattr(item, "data", "") for item in shown]
    assert "Answer" in text[0]                                   # the answer box comes first
    assert "<strong>Figure 1.</strong>" in text[2] and "<strong>Table 1.</strong>" in text[3]
    assert "largest |A" in text[3] and "dataset" in text[3]


def test_a_claims_answer_states_the_average_and_each_dataset():
    from analysis_lib.report.chapter import claim_answer
    from analysis_lib.stats.claims import CLAIMS
    rows = [("A", 1.05, 0.9, 1.2, "supported"), ("B", -1.02, -1.2, -0.8, "contradicted"),
            (AVERAGE, 0.015, -2.0, 2.0, "inconclusive")]
    table = pd.DataFrame([{"claim": "C6", "statement": CLAIMS["C6"].statement, "dataset": d, "effect": e, "low": lo,
                           "high": hi, "n": 4, "unit": "seeds", "verdict": v} for d, e, lo, hi, v in rows])
    text = claim_answer(table, "C6")
    assert text.startswith(f"<strong>{CLAIMS['C6'].statement}</strong> (C6)") and "averaged over the datasets" in text
    assert "+0.0150 (95 % interval −2.00 to +2.00)" in text and "over 4 seeds" in text
    assert "A <span" in text and ">supported<" in text and "B <span" in text and ">contradicted<" in text
    assert claim_answer(table, "C2") is None


def test_numbers_read_well():
    assert significant(7.95e-08) == "7.95 × 10⁻⁸" and signed(-0.0123456) == "−0.0123"
    assert significant(71.234) == "71.2" and significant(float("nan")) == "—"
    pm = "\u00a0±\u00a0"  # no-break spaces around ±
    assert mean_std(4.0, 2.8284) == f"4.0{pm}2.8" and mean_std(71.2345, 0.456) == f"71.23{pm}0.46"
    assert mean_std(4.0, 0.0) == "4.00" and mean_std(4.0, math.nan) == "4.00"  # never "± 0.00"
    assert mean_std(-1.5, 0.25, sign=True) == f"−1.50{pm}0.25" and mean_std(2e-6, 3e-7) == f"2.00 × 10⁻⁶{pm}3.0 × 10⁻⁷"


def test_over_seeds_gives_the_seed_to_seed_spread_of_each_group_mean():
    """Each seed's mean over the group's rows first, then mean ± sample std over seeds."""
    frame = pd.DataFrame({"model": ["A"] * 4 + ["B"] * 2, "seed": [1, 1, 2, 2, 1, 2],
                          "x": [1.0, 3.0, 5.0, 7.0, 4.0, 4.0]})
    table = over_seeds(frame, ["model"], ["x"]).set_index("model")
    assert table.x.to_dict() == {"A": 4.0, "B": 4.0}
    assert table.x_std["A"] == pytest.approx(np.std([2.0, 6.0], ddof=1)) and table.x_std["B"] == 0


def test_constant_and_empty_columns_leave_the_table():
    table = pd.DataFrame({"dataset": ["A", "B"], "seeds": [3, 3], "note": [None, None], "hm": [1.0, 2.0]})
    kept, constant = informative(table)
    assert list(kept.columns) == ["dataset", "hm"] and constant == {"seeds": 3}


def test_chapter_notebooks_hold_parameters_one_call_display_calls_and_prose(study):
    """No chapter template computes anything: its code is the parameters, one ``open_page`` of its
    own chapter and ``page.show`` of what that chapter defines; its title is a question."""
    import re
    from pathlib import Path
    import nbformat
    from analysis_lib.report.notebooks import CHAPTER_NOTEBOOKS
    experiment, claims = study
    assert set(CHAPTER_NOTEBOOKS) == set(chapters.CHAPTERS)
    for name in CHAPTER_NOTEBOOKS:
        cells = nbformat.read(Path(__file__).parents[1] / "notebooks" / f"{name}.ipynb", as_version=4).cells
        assert cells[0].cell_type == "markdown" and re.fullmatch(r"# .+\?", cells[0].source), name
        code = [c for c in cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
        call = rf'from analysis_lib\.report\.chapters import open_page\n\npage = open_page\("{name}", [^\n]+\)'
        assert re.fullmatch(call, code[0].source), (name, code[0].source)
        shown = [re.fullmatch(r'page\.show\("(\w+)"\)', c.source) for c in code[1:]]
        assert all(shown), (name, [c.source for c in code[1:]])
        if name == "known_truth":   # its page needs the demo world's paired renders, which the miniature lacks
            continue
        glued = set(re.findall(r"\{glue:\w+\}`(\w+)`", "".join(c.source for c in cells if c.cell_type == "markdown")))
        page = chapters.CHAPTERS[name](experiment, claims)
        assert {m.group(1) for m in shown} <= set(page.shown), name
        for claims_of in (claims, claims.iloc[:0]):   # also before any claim is measured: no glue key missing
            numbers = chapters.CHAPTERS[name](experiment, claims_of).numbers
            assert glued <= set(numbers), (name, glued - set(numbers))


def test_a_chapter_is_executed_again_when_its_template_or_the_library_changed(tmp_path):
    import os
    import nbformat
    from analysis_lib.report import notebooks
    target, template = tmp_path / "chapter.ipynb", tmp_path / "template.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), template)
    nbformat.write(nbformat.v4.new_notebook(metadata={"papermill": {"parameters": {"n": 1}}}), target)
    library = notebooks.newest_library_file()
    assert library.suffix == ".py" and library.stat().st_mtime >= os.stat(notebooks.__file__).st_mtime
    os.utime(template, (1, 1))
    os.utime(target, (library.stat().st_mtime + 1,) * 2)
    assert notebooks._up_to_date(target, {"n": 1}, template, library)
    assert not notebooks._up_to_date(target, {"n": 2}, template, library)       # other parameters
    os.utime(template, (library.stat().st_mtime + 2,) * 2)
    assert not notebooks._up_to_date(target, {"n": 1}, template, library)       # the template changed
    os.utime(template, (1, 1))
    os.utime(target, (library.stat().st_mtime - 1,) * 2)
    assert not notebooks._up_to_date(target, {"n": 1}, template, library)       # the library changed


def test_a_claims_data_names_its_datasets_and_what_each_rests_on():
    from analysis_lib.report.chapters import _data_text
    rows = pd.DataFrame({"n": [3, 3, 3], "unit": ["seeds × 66 images", "seeds × 64 images", "seeds × 66 images"]})
    assert _data_text(rows) == "3 datasets, each 3 seeds × 64–66 images"
    assert _data_text(rows.iloc[:1].assign(unit="seeds")) == "1 dataset, 3 seeds"
    assert _data_text(pd.DataFrame({"n": [3, 2], "unit": ["seeds", "seeds × 4 images"]})) == \
        "2 datasets, each 3 seeds, 2 seeds × 4 images"


def _own_data(spec) -> bool:
    """Whether a layer below the top of a chart spec brings data of its own."""
    return any("data" in layer or _own_data(layer) for layer in spec.get("layer", []))


def test_a_picked_dataset_filters_every_layer_of_its_chart(study):
    """A chart with a dataset picker filters its data at the top; a layer with data of its own (a
    reference line computed over every dataset) would escape the filter."""
    experiment, claims = study
    picked = 0
    for name, chapter in chapters.CHAPTERS.items():
        if name == "known_truth":
            continue
        for shown in chapter(experiment, claims).shown.values():
            if not shown.figure or not hasattr(shown.content, "to_dict"):
                continue
            spec = shown.content.to_dict()
            if any(p.get("name") == "dataset" for p in spec.get("params", [])):
                picked += 1
                assert "data" in spec and not _own_data(spec), name
    assert picked >= 2   # the causal test's and bias tuning's per-dataset strips


def test_the_oracle_chart_colours_each_model_as_every_page_does():
    """zero-shot, the prompted variant and bias tuning keep their colours; the oracle has its own."""
    from analysis_lib.report import charts
    from analysis_lib.report.known_truth import hm_chart, hm_comparison
    oracle = pd.DataFrame({"dataset": ["D", "D"], "seed": [1, 2], "oracle hm": [90.0, 91.0],
                           "zero-shot hm": [50.0, 50.0]})
    metrics = pd.DataFrame({"dataset": ["D"] * 4, "seed": [1, 2, 1, 2], "hm": [70.0, 71.0, 60.0, 61.0],
                            "variant_name": ["prompts4", "prompts4", "bias_both", "bias_both"],
                            "variant": ["ivlp", "ivlp", "bias", "bias"]})
    hm = hm_comparison(oracle, metrics, "prompts4", "bias_both")
    assert hm.groupby("model").hm.mean().to_dict() == {"zero-shot": 50.0, "oracle (−δ, best block)": 90.5,
                                                       "prompts4": 70.5, "bias_both": 60.5}
    scale = hm_chart(hm).to_dict()["encoding"]["color"]["scale"]
    assert dict(zip(scale["domain"], scale["range"])) == {k: charts.COLOURS[k]
                                                          for k in ("zeroshot", "oracle", "ivlp", "bias")}
