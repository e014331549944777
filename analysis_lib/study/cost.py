"""What an experiment's runs cost: the work each does, and the device time that work takes at the
rates the GPU check measured (`make gpu-check` writes them to RATES_FILE).

The cost model, with its assumptions so that a projection can be judged:
  * a run trains epochs × ceil(shots × base classes / batch_size) steps (every base class has at
    least `shots` training images, true of the 11 datasets at 16 shots), then evaluates CoOp's
    whole test set once (its base and novel halves);
  * a training step of variant v costs a_v + b_v · T seconds, where T is the number of token
    positions its class prompts take through the text tower (the run's own base-class prompts,
    tokenised as the variant writes them, grouped by length as the model runs them). a_v and b_v
    go through the check's two steps of that same variant (at two class counts), measured at the
    check's batch size; a variant whose text tower learns nothing encodes its classes once per run,
    and its measured b_v is about 0;
  * evaluation runs at the measured images per second; loading the model and starting the
    notebook kernel are not counted;
  * a run whose class names cannot be read under its data root, or whose variant the check did not
    time, is listed but not priced.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import open_clip

from ..checks import ConfigError
from ..data import DatasetError, UnknownDatasetError, base_class_count, get_spec, prompt_classnames, read_classnames
from ..data.registry import COOP_TEST_SIZES
from ..files import write_text_atomic
from ..model.prompted import class_prompts, length_groups, text_positions
from ..model.variants import variant_config
from .experiment import Run

RATES_FILE = "runs/gpu-check.json"


@dataclass(frozen=True)
class Work:
    """One run's work: training steps, the token positions of its class prompts per step, the test
    images it evaluates."""

    steps: int | None           # None: the dataset's class count is not known
    variant: str                # the experiment's variant name, whose measured steps price it
    text_positions: int | None  # None: the class names cannot be read (no data here)
    test_images: int | None     # None: no CoOp test-set size for this dataset


def prompt_lengths(model: str, variant: str, variant_params: dict, template: str, classnames: list[str]) -> list[int]:
    """Each class prompt's length in tokens, [SOS] and [EOS] included, as the variant's model tokenises it."""
    tokenizer = _tokenizer(model)
    texts, _ = class_prompts(variant_config(variant, **variant_params), template, classnames, tokenizer)
    return [len(tokenizer.encode(text)) + 2 for text in texts]


@lru_cache(maxsize=None)
def _tokenizer(model: str):
    return open_clip.get_tokenizer(model)


_BASE_CLASSNAMES: dict[tuple[str, str], tuple[str, ...]] = {}  # read once per process (a split file is MBs)


def _base_classnames(dataset: str, data_root: str) -> tuple[str, ...] | None:
    """The base classes' prompt names, or None while the dataset cannot be read under ``data_root``."""
    if (dataset, data_root) not in _BASE_CLASSNAMES:
        try:
            names = read_classnames(dataset, data_root)
        except (DatasetError, OSError):
            return None
        _BASE_CLASSNAMES[dataset, data_root] = tuple(prompt_classnames(names[:base_class_count(len(names))]))
    return _BASE_CLASSNAMES[dataset, data_root]


def run_work(run: Run) -> Work:
    params = run.params
    config = variant_config(params["variant"], **params["variant_params"])
    try:
        n_classes = get_spec(run.dataset).n_classes
    except UnknownDatasetError:
        n_classes = None
    classes = base_class_count(n_classes) if n_classes else None
    steps = 0 if not config.learns else \
        None if classes is None else params["epochs"] * math.ceil(params["shots"] * classes / params["batch_size"])
    names = _base_classnames(run.dataset, str(params["data_root"])) if config.learns else ()
    positions = None
    if names is not None:
        lengths = prompt_lengths(params["model"], params["variant"], params["variant_params"],
                                 get_spec(run.dataset).template, list(names)) if names else []
        positions = text_positions(length_groups(sorted(lengths))) if lengths else 0
    return Work(steps, run.variant_name, positions, COOP_TEST_SIZES.get(run.dataset))


@dataclass(frozen=True)
class Rates:
    """What the GPU check measured on one device."""

    device: str
    precision: str
    batch_size: int
    step_s: dict[str, dict[int, float]]  # variant name -> {text token positions: seconds per training step}
    eval_images_per_s: float
    measured: str                        # when (ISO 8601, UTC)

    def step_seconds(self, variant: str, positions: int) -> float | None:
        """a + b · positions through the variant's two measured steps; None if it was not measured."""
        points = sorted(self.step_s.get(variant, {}).items())
        if not points:
            return None
        (p0, s0), (p1, s1) = points[0], points[-1]
        slope = max(0.0, (s1 - s0) / (p1 - p0)) if p1 != p0 else 0.0
        intercept = max(0.0, s0 - slope * p0)
        return intercept + slope * positions

    def seconds(self, work: Work) -> float | None:
        if work.test_images is None or work.steps is None:
            return None
        evaluation = work.test_images / self.eval_images_per_s
        if work.steps == 0:
            return evaluation
        step = None if work.text_positions is None else self.step_seconds(work.variant, work.text_positions)
        return None if step is None else work.steps * step + evaluation


def save_rates(rates: Rates, path: str | Path | None = None) -> None:
    path = Path(path or RATES_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(asdict(rates), indent=2))


def load_rates(path: str | Path | None = None) -> Rates | None:
    """The rates of the last GPU check (default: RATES_FILE), or None when it has not run here."""
    path = Path(path or RATES_FILE)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return Rates(**{**raw, "step_s": {str(variant): {int(p): float(s) for p, s in steps.items()}
                                          for variant, steps in raw["step_s"].items()}})
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(f"{path} is not a GPU check's rates file ({err}); run `make gpu-check` again "
                          "to rewrite it") from None


def summary(runs: list[Run], rates: Rates | None) -> str:
    """Per dataset: runs, training steps, test images and, given rates, device hours; then the total.
    A seed-free run (zero-shot) costs nothing where another seed's run is listed: the sweep copies it."""
    rows, total_s, unknown = [], 0.0, []
    first_of = {}
    for run in runs:
        first_of.setdefault(run.seed_free_hash or run.run_id, run)
    for dataset in dict.fromkeys(run.dataset for run in runs):
        listed = [run for run in runs if run.dataset == dataset]
        works = [run_work(run) for run in listed if first_of[run.seed_free_hash or run.run_id] is run]
        steps = None if any(w.steps is None for w in works) else sum(w.steps for w in works)
        images = None if works[0].test_images is None else sum(w.test_images for w in works)
        seconds = [rates.seconds(w) for w in works] if rates else []
        hours = ""
        if rates and None not in seconds:
            total_s += sum(seconds)
            hours = f"{sum(seconds) / 3600:9.2f} h"
        elif rates:
            unknown.append(dataset)
        rows.append(f"  {dataset:<14} {len(listed):>4} runs {'?' if steps is None else f'{steps:,}':>10} steps "
                    f"{'?' if images is None else f'{images:,}':>10} test images {hours}")
    if rates is None:
        rows.append(f"no device hours: no rates measured here ({RATES_FILE}); run `make gpu-check` on the "
                    "machine that will run the sweep")
    else:
        rows.append(f"  total {total_s / 3600:.1f} device hours on {rates.device} ({rates.precision}, "
                    f"batch {rates.batch_size}; rates measured {rates.measured}; cost model: "
                    "analysis_lib/study/cost.py)")
        if unknown:
            rows.append(f"  not counted: {', '.join(unknown)} (class names not readable under the data root, "
                        "a variant the check did not time, or no CoOp test-set size)")
    return "\n".join(rows)
