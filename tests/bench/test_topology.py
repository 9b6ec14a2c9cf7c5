"""The topology's commands (pure): every host on the switch by a link of its own, limited both
ways, and nothing built outside the topology's own namespaces."""

from __future__ import annotations

import pytest

from mopar.bench.topology import Topology, parse_host, parse_rate


def test_rates_are_tc_rates() -> None:
    assert parse_rate("200mbit") == 200_000_000
    assert parse_rate("1gbit") == parse_rate("1000mbit") == 10**9
    assert parse_rate("2.5gbit") == 2_500_000_000
    for bad in ("200", "200mb", "fast", "-1mbit"):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(bad)


def test_each_host_has_one_address_and_one_prefix() -> None:
    topology = Topology("mopar-x", ("redis", "gw", "w0"), "200mbit")
    assert [topology.address(h) for h in topology.hosts] == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
    assert topology.prefix("w0") == ["ip", "netns", "exec", "mopar-x-w0"]
    assert topology.worker_host("w0") == "mopar-x-w0=10.77.0.3"
    assert parse_host(topology.worker_host("w0")) == topology.host("w0")
    with pytest.raises(ValueError, match="no host"):
        topology.address("w9")


@pytest.mark.parametrize("hosts", [("a", "a"), ("switch",), ("Gateway",), ("a-b",), ()])
def test_host_names_are_checked(hosts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        Topology("mopar-x", hosts)


def test_worker_hosts_are_netns_and_address() -> None:
    assert parse_host("ns=10.77.0.3").prefix == ("ip", "netns", "exec", "ns")
    for bad in ("ns", "=10.0.0.1", "ns="):
        with pytest.raises(ValueError, match="NETNS=ADDRESS"):
            parse_host(bad)


def test_every_link_is_limited_both_ways_and_every_command_stays_in_our_namespaces() -> None:
    topology = Topology("mopar-x", ("redis", "gw", "w0"), "200mbit")
    commands = topology.up_commands()
    ours = set(topology.namespaces)
    for command in commands:
        if command[:3] == ["ip", "netns", "add"]:
            assert command[3] in ours
            continue
        named = [command[i + 1] for i, word in enumerate(command) if word in ("-n", "netns")]
        assert named and set(named) <= ours, command  # acts inside our namespaces only
    limits = [c for c in commands if c[0] == "tc"]
    assert len(limits) == 2 * len(topology.hosts)  # each host's end and the switch's end of its link
    for command in limits:
        assert command[command.index("rate") + 1] == "200mbit"
        assert int(command[command.index("burst") + 1]) >= 16 * 1024
    veths = [c for c in commands if "veth" in c]
    assert [c[c.index("netns") + 1] for c in veths] == [topology.namespace(h) for h in topology.hosts]
    assert all(c[-1] == topology.switch for c in veths)  # the other end on the switch


def test_an_unlimited_topology_has_no_buckets() -> None:
    assert not [c for c in Topology("mopar-x", ("a", "b")).up_commands() if c[0] == "tc"]


def test_the_bucket_holds_half_a_millisecond_at_high_rates() -> None:
    assert Topology("mopar-x", ("a",), "1gbit").burst_bytes() == 62_500
    assert Topology("mopar-x", ("a",), "200mbit").burst_bytes() == 16 * 1024
