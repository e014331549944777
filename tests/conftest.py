import logging

import pytest
import torch

torch.set_num_threads(2)
logging.getLogger().setLevel(logging.ERROR)  # open_clip warns about random init on every build


@pytest.fixture(scope="session")
def tiny():
    from analysis_lib.backbone import load_backbone
    return load_backbone("tiny-clip")


@pytest.fixture(scope="session")
def vitb16():
    """ViT-B/16 at full size with random weights (OpenAI's architecture, QuickGELU)."""
    from analysis_lib.backbone import load_backbone
    torch.manual_seed(0)
    return load_backbone("ViT-B-16-quickgelu")
