"""The dataset layer: the 11 datasets' on-disk layouts, their readers, few-shot subsets, base/novel.

Image transforms and the torch Dataset live in `analysis_lib.data.transforms` (it imports torch).
"""
from .errors import (BadImageError, DataRootError, DatasetError, DatasetFolderError, MissingImagesError,
                     SplitFileFormatError, SplitFileMissingError, UnknownDatasetError)
from .fewshot import base_class_count, draw_fewshot, fewshot_split, split_classes, subsample_classes
from .readers import SPLITS, DatasetSplits, Item, mask_path, prompt_classnames, read_classnames, read_dataset, split_sha256
from .registry import DEMO_DATASETS, PAPER_DATASETS, DatasetSpec, dataset_names, get_spec, register_dataset

__all__ = [
    "BadImageError", "DataRootError", "DatasetError", "DatasetFolderError", "MissingImagesError",
    "SplitFileFormatError", "SplitFileMissingError", "UnknownDatasetError",
    "base_class_count", "draw_fewshot", "fewshot_split", "split_classes", "subsample_classes",
    "SPLITS", "DatasetSplits", "Item", "mask_path", "prompt_classnames", "read_classnames", "read_dataset", "split_sha256",
    "DEMO_DATASETS", "PAPER_DATASETS", "DatasetSpec", "dataset_names", "get_spec", "register_dataset",
]
