"""Serving sessions: optimised ahead of time, weights mapped from a file, pre-packed or not."""

from __future__ import annotations

import numpy as np

from slice_runtime.sessions import open_serving_session, open_session
from slice_runtime.tensors import TensorSpec, random_inputs


def test_pre_packed_or_not_a_serving_session_computes_what_the_model_does(small_model) -> None:
    model = small_model("bert-base")
    plain = open_session(model)
    feeds = random_inputs([TensorSpec.of_ort(i) for i in plain.get_inputs()], seed=1, ranges={"input_ids": (0, 100)})
    expected = plain.run(None, feeds)
    for prepack in (True, False):
        session = open_serving_session(model, prepack=prepack)
        options = session.get_session_options()
        unpacked = options.get_session_config_entry("session.disable_prepacking") if not prepack else None
        assert unpacked == (None if prepack else "1")
        for got, want in zip(session.run(None, feeds), expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
