"""The prepare Job profiles up to the thread count the operator gives it (MOPAR_PROFILE_THREADS)."""

from __future__ import annotations

import pytest

from mopar.operator.prepare import plan_spec
from mopar.operator.spec import parse
from slice_runtime.errors import SettingError

SPEC = parse({"model": {"storageUri": "zoo://mobilenetv2"}, "maxSlices": 2}, "m")


def test_the_job_profiles_at_the_threads_it_is_given(small_model, monkeypatch) -> None:
    monkeypatch.setenv("MOPAR_PROFILE_THREADS", "2")
    _, profile, _ = plan_spec(SPEC, small_model("mobilenetv2"), runs=1)
    assert profile.thread_counts == [1, 2]
    assert all(sorted(node.latency_by_threads) == [1, 2] for node in profile.nodes)


def test_without_the_variable_the_job_profiles_one_thread(small_model, monkeypatch) -> None:
    monkeypatch.delenv("MOPAR_PROFILE_THREADS", raising=False)
    _, profile, _ = plan_spec(SPEC, small_model("mobilenetv2"), runs=1)
    assert profile.thread_counts == [1]


def test_a_malformed_thread_count_names_the_variable(small_model, monkeypatch) -> None:
    monkeypatch.setenv("MOPAR_PROFILE_THREADS", "0")
    with pytest.raises(SettingError, match="MOPAR_PROFILE_THREADS must be at least 1"):
        plan_spec(SPEC, small_model("mobilenetv2"), runs=1)
