"""Published base-to-novel numbers for ViT-B/16 (base / novel / HM, percent), from the MaPLe paper
(per dataset: zero-shot CLIP and MaPLe; averages over the 11 datasets for more methods) and the
PromptSRC paper (IVLP 4+4, depth 9). Shown beside this project's runs on the real datasets."""
from __future__ import annotations

import pandas as pd

PER_DATASET = {
    "ImageNet": {"CLIP": (72.43, 68.14, 70.22), "MaPLe": (76.66, 70.54, 73.47)},
    "Caltech101": {"CLIP": (96.84, 94.00, 95.40), "MaPLe": (97.74, 94.36, 96.02)},
    "OxfordPets": {"CLIP": (91.17, 97.26, 94.12), "MaPLe": (95.43, 97.76, 96.58)},
    "StanfordCars": {"CLIP": (63.37, 74.89, 68.65), "MaPLe": (72.94, 74.00, 73.47)},
    "Flowers102": {"CLIP": (72.08, 77.80, 74.83), "MaPLe": (95.92, 72.46, 82.56)},
    "Food101": {"CLIP": (90.10, 91.22, 90.66), "MaPLe": (90.71, 92.05, 91.38)},
    "FGVCAircraft": {"CLIP": (27.19, 36.29, 31.09), "MaPLe": (37.44, 35.61, 36.50)},
    "SUN397": {"CLIP": (69.36, 75.35, 72.23), "MaPLe": (80.82, 78.70, 79.75)},
    "DTD": {"CLIP": (53.24, 59.90, 56.37), "MaPLe": (80.36, 59.18, 68.16)},
    "EuroSAT": {"CLIP": (56.48, 64.05, 60.03), "MaPLe": (94.07, 73.23, 82.35)},
    "UCF101": {"CLIP": (70.53, 77.50, 73.85), "MaPLe": (83.00, 78.66, 80.77)},
}
AVERAGE_BY_METHOD = {
    "CLIP": (69.34, 74.22, 71.70), "CoOp": (82.69, 63.22, 71.66), "CoCoOp": (80.47, 71.69, 75.83),
    "IVLP (2+2, depth 12)": (82.15, 74.07, 77.90), "MaPLe": (82.28, 75.14, 78.55),
    "IVLP (4+4, depth 9, PromptSRC)": (84.21, 71.79, 77.51),
}


def reference_table(datasets: list[str] | None = None) -> pd.DataFrame:
    """Tidy rows (dataset, method, base, novel, hm) for the given datasets (all by default) and
    the "Average" row; empty for datasets the literature does not report (e.g. the demo ones)."""
    chosen = PER_DATASET if datasets is None else {d: PER_DATASET[d] for d in datasets if d in PER_DATASET}
    rows = [(d, m, *v) for d, methods in chosen.items() for m, v in methods.items()]
    if chosen:
        rows += [("Average", m, *v) for m, v in AVERAGE_BY_METHOD.items()]
    return pd.DataFrame(rows, columns=["dataset", "method", "base", "novel", "hm"])
