from __future__ import annotations

import numpy as np
import pytest

from inferline.models.layout import standard_layout, standard_strides
from inferline.models.torch import TorchHandler


def test_size_one_axes_get_standard_strides_without_a_copy() -> None:
    nhwc = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28, 1)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    assert nchw.strides == (3136, 4, 112, 4)  # numpy's "contiguous", torch's channels-last
    fixed = standard_layout(nchw)
    assert fixed.strides == standard_strides((2, 1, 28, 28), 4) == (3136, 3136, 112, 4)
    assert np.shares_memory(fixed, nhwc) and np.array_equal(fixed, nchw)


def test_non_contiguous_and_read_only_inputs_are_copied_when_asked() -> None:
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    view = base.T
    out = standard_layout(view, np.float32)
    assert out.flags.c_contiguous and out.dtype == np.float32 and np.array_equal(out, view)
    base.flags.writeable = False
    assert not standard_layout(base).flags.writeable
    writable = standard_layout(base, writable=True)
    assert writable.flags.writeable and not np.shares_memory(writable, base)


def test_torch_handler_runs_a_view_flattening_model_on_transposed_images() -> None:
    torch = pytest.importorskip("torch")
    from tests.mnist import MnistNet, logits

    torch.manual_seed(0)
    model = MnistNet().eval()
    nhwc = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    got = TorchHandler(output="raw").predict(model, nchw).prediction
    np.testing.assert_allclose(got, logits(model, nchw.copy()), atol=1e-6)
