"""What an experiment's runs cost: the work each does, and the device time that work takes at the
rates the GPU check measured (`make gpu-check` writes them to RATES_FILE).

The cost model, with its assumptions so that a projection can be judged:
  * a run trains epochs × ceil(shots × base classes / batch_size) steps (every base class has at
    least `shots` training images, true of the 11 datasets at 16 shots), then evaluates CoOp's
    whole test set once (its base and novel halves);
  * a training step with C base classes costs a + b·C seconds when the text tower learns (all
    class prompts run at every step), and a when it does not (class features once per run); a and
    b go through the check's two ivlp steps (ivlp has the most prompts: other variants are
    over-estimated a little), measured at the check's batch size;
  * evaluation runs at the measured images per second; loading the model and starting the
    notebook kernel are not counted.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..checks import ConfigError
from ..data import UnknownDatasetError, base_class_count, get_spec
from ..data.registry import COOP_TEST_SIZES
from ..files import write_text_atomic
from ..model.variants import variant_config
from .experiment import Run

RATES_FILE = "runs/gpu-check.json"


@dataclass(frozen=True)
class Work:
    """One run's work: training steps, the classes each step encodes, the test images it evaluates."""

    steps: int | None         # None: the dataset's class count is not known
    classes: int | None
    text_learned: bool
    test_images: int | None   # None: no CoOp test-set size for this dataset


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
    return Work(steps, classes, bool(config.text_n_ctx or config.bias_text_depth), COOP_TEST_SIZES.get(run.dataset))


@dataclass(frozen=True)
class Rates:
    """What the GPU check measured on one device."""

    device: str
    precision: str
    batch_size: int
    step_s: dict[int, float]  # number of classes -> seconds per ivlp training step
    eval_images_per_s: float
    measured: str             # when (ISO 8601, UTC)

    def step_seconds(self, classes: int, text_learned: bool) -> float:
        (c0, s0), (c1, s1) = sorted(self.step_s.items())[0], sorted(self.step_s.items())[-1]
        slope = max(0.0, (s1 - s0) / (c1 - c0))
        intercept = max(0.0, s0 - slope * c0)
        return intercept + slope * classes if text_learned else intercept

    def seconds(self, work: Work) -> float | None:
        if work.test_images is None or work.steps is None:
            return None
        return work.steps * self.step_seconds(work.classes, work.text_learned) + \
            work.test_images / self.eval_images_per_s


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
        return Rates(**{**raw, "step_s": {int(k): float(v) for k, v in raw["step_s"].items()}})
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
            rows.append(f"  not counted (class count or CoOp test-set size unknown): {', '.join(unknown)}")
    return "\n".join(rows)
