"""Every MetalLB sample manifest in ../shared/data/metallb-samples loads, and means what MetalLB says.

What the samples exercise (see SOURCE.md there):
- ipaddresspool_simple / simple_pool_adv_l2 / operator sample1: a CIDR, a short IPv4 range
  and an IPv6 /124 in one pool (the IPv6 written with a leading zero group, fc00:f853:0ccd:...);
- operator sample2: 172.20.0.100/24 (host bits set; means 172.20.0.0/24) with autoAssign false;
- operator sample3: an IPv6 range 2002:2:2::1-2002:2:2::100;
- ipaddresspool_with_selector: avoidBuggyIPs and a serviceAllocation with priority,
  namespaces, a namespace matchLabels selector and a service matchExpressions selector;
- L2Advertisements selecting pools by list, selecting nodes by hostname, and one with no
  spec at all (announce every pool from every node);
- MetalLB: an empty one, and one with nodeSelector, loadBalancerClass and speakerTolerations.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from raylb.config import build_config
from raylb.models import parse
from raylb.models.meta import Resource
from raylb.models.metallb import MetalLB
from raylb.models.pools import AddressPool, IPAddressPool, L2Advertisement

from tests.unit.test_config import rng


def load(path: Path) -> list[Resource]:
    return [parse(doc) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def samples(shared_data: Path) -> dict[str, list[Resource]]:
    folder = shared_data / "metallb-samples"
    return {p.name: load(p) for p in sorted(folder.glob("*.yaml"))}


def test_every_sample_loads(samples: dict[str, list[Resource]]) -> None:
    kinds = Counter(obj.kind for objs in samples.values() for obj in objs)
    assert kinds == {"IPAddressPool": 6, "L2Advertisement": 5, "MetalLB": 2}
    assert len(samples) == 9


def config_of(objs: list[Resource]):  # type: ignore[no-untyped-def]
    return build_config(
        address_pools=[o for o in objs if isinstance(o, AddressPool)],
        ip_address_pools=[o for o in objs if isinstance(o, IPAddressPool)],
        l2_advertisements=[o for o in objs if isinstance(o, L2Advertisement)],
    )


def test_operator_pools_and_advertisements(samples: dict[str, list[Resource]]) -> None:
    config = config_of(samples["operator_ipaddresspools.yaml"] + samples["operator_l2advertisements.yaml"])
    assert config.problems == ()
    one, two, three = (config.pools[f"ip-addresspool-sample{i}"] for i in (1, 2, 3))
    assert one.ranges == (rng("192.168.9.1-192.168.9.5"), rng("192.168.10.0-192.168.10.255"), rng("fc00:f853:ccd:e799::-fc00:f853:ccd:e799::f"))
    # 172.20.0.100/24 has host bits set; like MetalLB (Go's net.ParseCIDR) it means 172.20.0.0/24.
    assert two.ranges == (rng("172.20.0.0-172.20.0.255"),) and two.auto_assign is False
    assert three.ranges == (rng("2002:2:2::1-2002:2:2::100"),) and three.auto_assign is True
    ads = {a.name: a for a in config.advertisements}
    assert ads["l2-adv-sample1"].pools == {"ip-addresspool-sample1"}
    assert ads["l2-adv-sample2"].pools == set(config.pools)
    assert ads["l2-adv-sample2"].selects_node({"kubernetes.io/hostname": "kind-control-plane"})
    assert not ads["l2-adv-sample2"].selects_node({"kubernetes.io/hostname": "worker"})


def test_pool_with_service_allocation(samples: dict[str, list[Resource]]) -> None:
    config = config_of(samples["ipaddresspool_with_selector.yaml"])
    pool = config.pools["ippool-ns-service-alloc-sample"]
    assert pool.avoid_buggy_ips and pool.allocation is not None
    assert (pool.allocation.priority, pool.allocation.namespaces) == (50, {"namespace-a", "namespace-b"})
    assert pool.allocation.namespace_selectors[0].matches({"foo": "bar"})
    assert pool.allocation.service_selectors[0].matches({"app": "bar"})
    assert not pool.allocation.service_selectors[0].matches({"app": "foo"})


def test_advertisement_without_spec_announces_every_pool(samples: dict[str, list[Resource]]) -> None:
    config = config_of(samples["simple_pool_adv_l2.yaml"])
    assert config.problems == ()
    (empty,) = config.advertisements
    assert (empty.name, empty.pools, empty.node_selectors, empty.interfaces) == ("empty", {"example"}, (), ())


def test_advertisement_naming_a_pool_from_another_file_is_reported(samples: dict[str, list[Resource]]) -> None:
    # l2adv_selects_pools_by_list names "first-pool", which no sample defines.
    config = config_of(samples["l2adv_selects_pools_by_list.yaml"] + samples["ipaddresspool_simple.yaml"])
    assert [(p.kind, p.name, p.field, p.value) for p in config.problems] == [
        ("L2Advertisement", "example", "spec.ipAddressPools[0]", "first-pool")
    ]


def test_all_samples_together_show_duplicate_names_and_overlaps(samples: dict[str, list[Resource]]) -> None:
    # The samples repeat pool "example" and reuse 192.168.10.0/24 across pools: loaded into
    # one cluster, exactly one pool per conflict survives and the others are reported.
    config = config_of([o for objs in samples.values() for o in objs])
    assert sorted(config.pools) == ["example", "ip-addresspool-sample2", "ip-addresspool-sample3", "ippool-ns-service-alloc-sample"]
    refused = sorted({(p.name, p.field.split("[")[0]) for p in config.problems if p.kind == "IPAddressPool"})
    assert refused == [("example", "metadata.name"), ("ip-addresspool-sample1", "spec.addresses")]


def test_metallb_samples(samples: dict[str, list[Resource]]) -> None:
    (plain,) = samples["operator_metallb.yaml"]
    (demo,) = samples["operator_metallb_demo.yaml"]
    assert isinstance(plain, MetalLB) and isinstance(demo, MetalLB)
    assert plain.metadata.name == demo.metadata.name == "metallb"
    assert plain.spec.load_balancer_class is None
    assert demo.spec.node_selector == {"feature.node.kubernetes.io/metalLB.capable": "true"}
    assert demo.spec.load_balancer_class == "metallb.universe.tf/metallb"
    (toleration,) = demo.spec.speaker_tolerations
    assert (toleration.key, toleration.operator, toleration.effect) == ("Example", "Exists", "NoExecute")
