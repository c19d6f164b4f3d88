"""Fixtures shared by the export test files: SwiftFormer-XS with weights that make every path matter."""
import pytest
import timm
from helpers import randomize_

from swiftlib.models import create_model, load_checkpoint


@pytest.fixture(scope="module")
def timm_xs():
    return randomize_(timm.create_model("swiftformer_xs", pretrained=False))


@pytest.fixture(scope="module")
def ours_xs(timm_xs):
    """swiftlib's XS holding timm's (randomised) weights, eval mode, not fused."""
    m = create_model("swiftformer_xs")
    load_checkpoint(m, timm_xs.state_dict())
    return m.eval()
