"""The wire format's arrays come back equal and writable: torch takes them without copying and
without its "non-writable NumPy array" warning."""

import warnings

import numpy as np
import torch

from hpt_kit.core.wire import decode, encode


def test_decoded_arrays_are_equal_and_writable():
    sent = {"state": np.arange(6, dtype=np.float32).reshape(2, 3), "image": np.full((1, 4, 4, 3), 7, np.uint8)}
    got = decode(encode(sent))
    for key, value in sent.items():
        np.testing.assert_array_equal(got[key], value)
        assert got[key].dtype == value.dtype and got[key].flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning the server printed for every request
        torch.as_tensor(got["state"])
