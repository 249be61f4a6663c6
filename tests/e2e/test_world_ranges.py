"""The world's range check (world.find_overlaps) on made-up `ip -j` data: no namespace is touched."""
import pytest

import world as W

# What `ip -j addr` / `ip -j route` print on a machine whose uplink is 192.0.2.0/24 and fd00::/64.
ADDRS = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                                   {"family": "inet6", "local": "::1", "prefixlen": 128}]},
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2", "prefixlen": 24},
                                     {"family": "inet6", "local": "fd00::2", "prefixlen": 64},
                                     {"family": "inet6", "local": "fe80::fc:ff:fe00:1", "prefixlen": 64}]},
    {"ifname": "ifb0", "addr_info": []},
]
ROUTES = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link"},
    {"type": "local", "dst": "127.0.0.1", "dev": "lo", "table": "local"},
    {"dst": "fd00::/64", "dev": "eth0"},
    {"dst": "fe80::/64", "dev": "eth0"},
    {"dst": "default", "gateway": "fd00::1", "dev": "eth0"},
    {"type": "multicast", "dst": "ff00::/8", "dev": "eth0", "table": "local"},
]


def test_world_ranges_are_free_on_this_kind_of_machine():
    assert W.find_overlaps(W.WORLD_RANGES, ADDRS, ROUTES) == []
    assert W.find_overlaps(["198.18.1.0/24", "198.51.100.10/32"], ADDRS, ROUTES) == []


def test_a_world_on_the_uplink_is_refused():
    """The old world (host 192.0.2.2/24) sat on the machine's real uplink."""
    clashes = W.find_overlaps(["192.0.2.0/24", "2001:db8:2::/64"], ADDRS, ROUTES)
    assert ("192.0.2.0/24", "address 192.0.2.2/24 on eth0") in clashes
    assert any(r == "192.0.2.0/24" and what.startswith("route 192.0.2.0/24") for r, what in clashes)
    assert all(r == "192.0.2.0/24" for r, _ in clashes), clashes


def test_route_only_and_v6_clashes():
    routes = ROUTES + [{"dst": "198.18.0.0/15", "gateway": "192.0.2.9", "dev": "eth0"},
                       {"dst": "2001:db8:200::/40", "dev": "tun0"}]
    clashes = W.find_overlaps(W.WORLD_RANGES, ADDRS, routes)
    # the /15 covers the second uplink's 198.19.0.0/24 too
    assert {r for r, _ in clashes} == {"198.18.0.0/24", "198.19.0.0/24", "2001:db8:203::/64"}, clashes
    # an address inside a world prefix clashes through its own prefix, whatever its length
    addrs = ADDRS + [{"ifname": "wg0", "addr_info": [{"family": "inet6", "local": "2001:db8:100::7",
                                                       "prefixlen": 128}]}]
    assert W.find_overlaps(["2001:db8:100::/64"], addrs, []) == [
        ("2001:db8:100::/64", "address 2001:db8:100::7/128 on wg0")]


def test_default_routes_are_ignored():
    assert W.find_overlaps(["198.18.0.0/24"], [], [{"dst": "default"}, {"dst": "0.0.0.0/0"},
                                                   {"dst": "::/0"}]) == []


def test_check_ranges_free_raises_one_message(monkeypatch):
    monkeypatch.setattr(W, "_ip_json", lambda *a: ADDRS if a == ("addr",) else ROUTES)
    with pytest.raises(W.RangeClash) as e:
        W.check_ranges_free(["192.0.2.0/24"], "test world x")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("test world x: refusing to start"), msg
    assert "192.0.2.0/24 overlaps address 192.0.2.2/24 on eth0" in msg, msg
    rep = W.check_ranges_free(W.WORLD_RANGES)
    assert rep["ranges"] == W.WORLD_RANGES and rep["addrs"] == 5
