"""Each built-in pricing table's rules, with plain values: what a function may be given and
what a run of it costs."""

from __future__ import annotations

import pytest

from mopar.errors import UsageError
from mopar.plan import pricing
from mopar.plan.pricing import Allocation


def test_threads_are_the_vcpus_rounded_up_and_a_fraction_slows_a_run() -> None:
    assert Allocation(1024, 0.25).threads == 1 and Allocation(1024, 0.25).slowdown == 4.0
    assert Allocation(1024, 2.5).threads == 3 and Allocation(1024, 2.5).slowdown == pytest.approx(1.2)
    assert Allocation(1024, 2.0).threads == 2 and Allocation(1024, 2.0).slowdown == 1.0


def test_kubernetes_requests_quarter_vcpus_and_1_to_6_5_gib_per_vcpu() -> None:
    table = pricing.KUBERNETES
    small = table.allocations(300, 0.25, 1.0)
    assert [a.vcpus for a in small] == [0.25, 0.5, 0.75, 1.0]
    # At least 512 MiB, and at least 1 GiB per vCPU.
    assert [a.memory_mb for a in small] == [512, 512, 768, 1024]
    # 2,000 MB is more than 6.5 GiB per vCPU allows at 0.25 vCPU (1,664 MB): it needs 0.5.
    assert table.allocation(2000).vcpus == 0.5
    assert table.allocations(2000, 0.25, 0.25) == []
    # Per second of a pod's requests: $0.0445 per vCPU-hour, $0.0049225 per GiB-hour, no fee;
    # a request pays its own time, unrounded.
    assert table.invocation_usd(Allocation(2048, 2.0), 3_600_000) == pytest.approx(2 * 0.0445 + 2 * 0.0049225)
    assert table.billed_ms(10.0104) == pytest.approx(10.0104, abs=1e-3)


def test_lambda_gives_memory_over_1769_mb_of_a_vcpu_up_to_10240_mb() -> None:
    table = pricing.LAMBDA
    sizes = {(a.memory_mb, a.vcpus) for a in table.allocations(300)}
    assert (300, round(300 / 1769, 6)) in sizes  # what it needs, at a sixth of a vCPU
    assert (1769, 1.0) in sizes and (3538, 2.0) in sizes
    assert max(a.memory_mb for a in table.allocations(300)) == 10_240
    assert max(a.vcpus for a in table.allocations(300)) == pytest.approx(10_240 / 1769)
    assert table.allocations(11_000) == []
    # CPU costs nothing apart: more vCPUs are bought as memory, billed per GB-second and 1 ms.
    assert table.invocation_usd(Allocation(1024, 1024 / 1769), 1000) == pytest.approx(0.20 / 1e6 + 0.0000166667)
    assert table.billed_ms(10.01) == 11


def test_knative_offers_1_2_4_6_8_vcpus_with_up_to_4_gib_each_billed_in_100_ms() -> None:
    table = pricing.KNATIVE
    assert [a.vcpus for a in table.allocations(256)] == [1.0, 2.0, 4.0, 6.0, 8.0]
    assert table.allocation(5000).vcpus == 2.0
    assert table.billed_ms(1) == 100
    cost = table.invocation_usd(Allocation(1024, 1.0), 100)
    assert cost == pytest.approx(0.40 / 1e6 + 0.1 * (0.0000025 + 0.000024))


def test_the_flat_accounting_gives_one_vcpu_whatever_the_memory() -> None:
    table = pricing.LAMBDA_FLAT
    assert table.allocations(100.2) == [Allocation(128, 1.0)]
    assert table.allocations(300.2) == [Allocation(301, 1.0)]
    assert table.allocations(300, 2.0, 4.0) == []


def test_names_and_aliases() -> None:
    assert pricing.DEFAULT == "kubernetes"
    assert pricing.load("lambda-cpu-scaled") is pricing.LAMBDA
    with pytest.raises(UsageError, match="neither a built-in table"):
        pricing.load("nosuch")


def test_a_clusters_own_prices_from_a_file(tmp_path) -> None:
    path = tmp_path / "n2-standard.yaml"
    path.write_text("base: kubernetes\nvcpu_second_usd: 0.00001\ngb_second_usd: 0.000001\n")
    table = pricing.load(str(path))
    assert table.name == "n2-standard" and table.cpu_step == 0.25 and table.mb_per_vcpu_max == 6.5 * 1024
    path.write_text("base: kubernetes\ncpu_sizes: [1, 2]\n")
    assert [a.vcpus for a in pricing.load(str(path)).allocations(100)] == [1.0, 2.0]
    path.write_text("base: nosuch\n")
    with pytest.raises(UsageError, match="base 'nosuch'"):
        pricing.load(str(path))
