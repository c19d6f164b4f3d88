"""Shared fixtures: SwiftFormer-XS with weights that make every path matter (the export test files), and a
test session that leaves nothing of torch.compile's in the system temp folder."""
import getpass
import shutil
import tempfile
from pathlib import Path

import pytest
import timm
from helpers import randomize_

from swiftlib.models import create_model, load_checkpoint


@pytest.fixture(scope="session", autouse=True)
def _no_compile_headers_left_in_tmp():
    """torch.compile keeps precompiled C++ headers in ``<temp>/torchinductor_<user>`` whatever
    TORCHINDUCTOR_CACHE_DIR says (``torch._inductor.codecache._HEADER_DIR``, torch's
    ``default_cache_dir()``): the folder is removed at the end when this session created it."""
    headers = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
    existed = headers.exists()
    yield
    if not existed:
        shutil.rmtree(headers, ignore_errors=True)


@pytest.fixture(scope="module")
def timm_xs():
    return randomize_(timm.create_model("swiftformer_xs", pretrained=False))


@pytest.fixture(scope="module")
def ours_xs(timm_xs):
    """swiftlib's XS holding timm's (randomised) weights, eval mode, not fused."""
    m = create_model("swiftformer_xs")
    load_checkpoint(m, timm_xs.state_dict())
    return m.eval()
