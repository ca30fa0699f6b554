#!/usr/bin/env python3
"""Hosts, host clusters, initiator ports, CHAP settings and LUN mappings through the real
`infinisdk` client (InfiniBox's SDK), against troika's REST API.

Creates a host, adds an iSCSI port, sets CHAP (the secret never comes back), maps a
volume (`host.map_volume`), reads the LUNs (`get_luns`), checks the refusals (an
initiator on two hosts, a mapped volume deleted, a LUN taken twice), unmaps; then a
cluster with two hosts and a shared mapping that both hosts see.

Standalone like test_infinisdk.py (same environment variables, same output); its helpers
come from there. Exit code 0 when every step passes.

Needs: pip install infinisdk==289.1.4   (see NOTES.md beside this file)
"""

import sys
import traceback

from capacity import GiB
from infi.dtypes.iqn import make_iscsi_name

from test_infinisdk import (
    ADMIN_PASSWORD,
    PASSED,
    PORT,
    RUN,
    StepFailed,
    check,
    cleanup,
    connect,
    expect_failure,
    step,
)


def raw(system, kind, obj):
    return system.api.get("{}/{}".format(kind, obj.id)).get_result()


def main():
    if not PORT or ADMIN_PASSWORD is None:
        print("infinisdk: set TROIKA_URL_PORT and TROIKA_ADMIN_PASSWORD (and TROIKA_URL_HOST)", file=sys.stderr)
        return 2

    # Deleted in this order by the cleanup after a failure: clusters and hosts (their
    # mappings go with them), then volumes, then the pool.
    created, created_volumes, created_pools = [], [], []
    system = None
    try:
        step("login as admin")
        system = connect("admin", ADMIN_PASSWORD)

        step("create a pool and two volumes")
        pool = system.pools.create(name="hosts_{}_pool".format(RUN), physical_capacity=10 * GiB, virtual_capacity=10 * GiB)
        created_pools.append(pool)
        vol1 = system.volumes.create(pool=pool, size=GiB, name="hosts_{}_v1".format(RUN))
        vol2 = system.volumes.create(pool=pool, size=GiB, name="hosts_{}_v2".format(RUN))
        created_volumes[:0] = [vol1, vol2]

        step("create a host and add an iSCSI port")
        iqn1 = "iqn.2024-01.com.example:{}-one".format(RUN)
        iqn2 = "iqn.2024-01.com.example:{}-two".format(RUN)
        host = system.hosts.create(name="hosts_{}_h1".format(RUN))
        created.append(host)
        host.add_port(make_iscsi_name(iqn1))
        ports = [str(p) for p in host.get_ports()]
        check(ports == [iqn1], "ports {!r}".format(ports))
        other = system.hosts.create(name="hosts_{}_h2".format(RUN))
        created.insert(0, other)
        expect_failure("the same initiator on a second host",
                       lambda: other.add_port(make_iscsi_name(iqn1)), 409, "PORT_ALREADY_BELONGS_TO_HOST")
        other.add_port(make_iscsi_name(iqn2))

        step("set CHAP; the secret is never shown")
        host.update_fields(security_method="CHAP", security_chap_inbound_username="hosts-user",
                           security_chap_inbound_secret="hosts-secret1")
        answer = raw(system, "hosts", host)
        check(answer["security_method"] == "CHAP", "security_method {!r}".format(answer["security_method"]))
        check(answer["security_chap_has_inbound_secret"] is True, "the inbound secret is not set")
        check("hosts-secret1" not in str(answer), "the secret came back: {}".format(answer))
        expect_failure("a CHAP secret too short",
                       lambda: host.update_fields(security_chap_inbound_secret="short"), 400, "INVALID_CHAP_SETTINGS")

        step("map a volume and read the LUNs")
        lu = host.map_volume(vol1)
        check(int(lu) == 1, "first host LUN {}".format(int(lu)))
        luns = host.get_luns()
        check(len(luns) == 1 and luns[1].get_volume() == vol1, "host LUNs {!r}".format(list(luns)))
        check(host.is_volume_mapped(vol1), "is_volume_mapped says no")
        check(vol1.is_mapped(), "the volume does not say it is mapped")
        expect_failure("LUN 1 taken twice", lambda: host.map_volume(vol2, lun=1), 409, "LUN_ALREADY_IN_USE")
        expect_failure("a mapped volume deleted", lambda: vol1.delete(), 400, "BAD_REQUEST")

        step("unmap")
        host.unmap_volume(vol1)
        check(len(host.get_luns()) == 0, "LUNs left after unmapping")
        check(not vol1.is_mapped(), "the volume still says it is mapped")

        step("a cluster with two hosts and a shared mapping")
        cluster = system.host_clusters.create(name="hosts_{}_c".format(RUN))
        created.insert(0, cluster)
        cluster.add_host(host)
        cluster.add_host(other)
        check(sorted(h.id for h in cluster.get_hosts()) == sorted([host.id, other.id]), "cluster hosts")
        check(host.get_cluster() == cluster, "the host does not name its cluster")
        shared = cluster.map_volume(vol2)
        check(int(shared) == 11 and shared.is_clustered(), "cluster LUN {}".format(int(shared)))
        for member in (host, other):
            seen = member.get_luns(from_cache=False)
            check(len(seen) == 1 and seen[11].get_volume() == vol2, "{} sees {!r}".format(member.get_name(), list(seen)))
        own = other.map_volume(vol1)
        check(int(own) == 1, "a member's own LUN {}".format(int(own)))
        check(len(cluster.get_luns(from_cache=False)) == 1, "the cluster sees its hosts' own LUNs")
        cluster.unmap_volume(vol2)
        other.unmap_volume(vol1)
        cluster.remove_host(other)
        check(other.get_cluster(from_cache=False) is None, "the removed host still names the cluster")

        step("delete the cluster, the hosts, the volumes and the pool")
        for item in created + created_volumes + created_pools:
            item.delete()
        created[:], created_volumes[:], created_pools[:] = [], [], []

        step("logout")
        system.logout()
        system = None
    except Exception as error:  # a failed check or anything infinisdk raised
        failed = PASSED.pop() if PASSED else "setup"
        print("infinisdk: FAILED at step {!r}: {}".format(failed, error), file=sys.stderr)
        if not isinstance(error, StepFailed):
            traceback.print_exc()
        cleanup(system, created + created_volumes, created_pools, [])
        print("infinisdk: {} passed, 1 failed".format(len(PASSED)))
        return 1
    print("infinisdk: {} passed, 0 failed".format(len(PASSED)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
