#!/usr/bin/env python3
"""Snapshots, restores, refreshes, group snapshots, consistency groups and snapshot locks
through the real `infinisdk` client (InfiniBox's SDK), against troika's REST API.

infinisdk does no I/O, so this checks what the API says: types, parents, families,
members, that restores and refreshes succeed, what deletes take with them, and the
refusals (with HTTP status and error code). tests/snapshot_api.rs checks the data itself.

Standalone like test_infinisdk.py (same environment variables, same output); its helpers
come from there. Exit code 0 when every step passes.

Needs: pip install infinisdk==289.1.4   (see NOTES.md beside this file, section 11)
"""

import sys
import time
import traceback

import arrow
from capacity import GiB

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
    names,
    step,
)


def ids(objects):
    return sorted(o.id for o in objects)


def raw_volume(system, volume):
    """The volume as the API has it now (fields infinisdk 289.1.4 does not know at system
    version 2.0.0, such as lock_state, are only in the cache or the raw answer)."""
    return system.api.get("volumes/{}".format(volume.id)).get_result()


def main():
    if not PORT or ADMIN_PASSWORD is None:
        print("infinisdk: set TROIKA_URL_PORT and TROIKA_ADMIN_PASSWORD (and TROIKA_URL_HOST)", file=sys.stderr)
        return 2

    # Deleted in this order by the cleanup after a failure: children before parents.
    created_volumes, created_pools = [], []
    system = None
    try:
        step("login as admin")
        system = connect("admin", ADMIN_PASSWORD)
        check(system.compat.has_writable_snapshots(),
              "troika must list the feature 'snapshots' in _features (snapshot type SNAPSHOT)")

        step("create a pool and two volumes")
        pool = system.pools.create(name="snap_{}_pool".format(RUN), physical_capacity=20 * GiB, virtual_capacity=20 * GiB)
        created_pools.append(pool)
        vol1 = system.volumes.create(pool=pool, size=GiB, name="snap_{}_v1".format(RUN), provisioning="THIN")
        vol2 = system.volumes.create(pool=pool, size=2 * GiB, name="snap_{}_v2".format(RUN), provisioning="THIN")
        created_volumes[:0] = [vol1, vol2]
        check(vol1.is_master() and not vol1.is_snapshot(), "a new volume is not MASTER")
        check(not vol1.has_children(), "a new volume has children")

        # ---------------------------------------------------------------- snapshots
        step("snapshot a volume")
        snap1 = vol1.create_snapshot(name="snap_{}_s1".format(RUN))  # POST volumes {name, parent_id}
        created_volumes.insert(0, snap1)
        check(snap1.get_type() == "SNAPSHOT", "snapshot type {!r}".format(snap1.get_type()))
        check(snap1.is_snapshot() and not snap1.is_master(), "is_snapshot/is_master wrong for a snapshot")
        check(snap1.get_parent() == vol1, "snapshot parent {!r}".format(snap1.get_parent()))
        check(snap1.get_family_master() == vol1, "family master {!r}".format(snap1.get_family_master()))
        check(snap1.get_size() == vol1.get_size(), "snapshot size {} != volume size".format(snap1.get_size()))
        check(snap1.get_pool() == pool, "snapshot pool {!r}".format(snap1.get_pool()))
        check(snap1.get_field("write_protected") is True, "a snapshot is write-protected unless asked otherwise")
        fresh = system.volumes.get_by_id_lazy(snap1.id)  # nothing cached: every field is fetched
        check(fresh.is_snapshot() and fresh.get_parent() == vol1, "a fresh object of the snapshot reads wrong")
        check(vol1.is_master() and vol1.has_children(), "the volume is not a master with children")

        step("snapshot with a generated name, a writable one, a snapshot of a snapshot")
        unnamed = vol1.create_snapshot()  # infinisdk generates the name
        created_volumes.insert(0, unnamed)
        check(unnamed.get_name().startswith("vol_"), "generated name {!r}".format(unnamed.get_name()))
        writable = vol1.create_snapshot(name="snap_{}_rw".format(RUN), write_protected=False)
        created_volumes.insert(0, writable)
        check(writable.get_field("write_protected", from_cache=False) is False, "write_protected=False not kept")
        nested = snap1.create_snapshot(name="snap_{}_s1s".format(RUN))
        created_volumes.insert(0, nested)
        check(nested.get_parent() == snap1, "nested snapshot parent {!r}".format(nested.get_parent()))
        check(nested.get_family_master() == vol1, "nested snapshot family master {!r}".format(nested.get_family_master()))
        expect_failure("snapshot with a taken name", lambda: vol1.create_snapshot(name=snap1.get_name()), 409, "NAME_CONFLICT")
        expect_failure("snapshot of a missing volume",
                       lambda: system.volumes.get_by_id_lazy(987654321).create_snapshot(name="snap_{}_none".format(RUN)),
                       404, "VOLUME_NOT_FOUND")

        step("children and snapshots are listed by parent and type")
        check(ids(vol1.get_children()) == ids([snap1, unnamed, writable]), "vol1 children {}".format(names(vol1.get_children())))
        check(ids(vol1.get_snapshots()) == ids([snap1, unnamed, writable]), "vol1 snapshots {}".format(names(vol1.get_snapshots())))
        check(ids(snap1.get_children()) == [nested.id], "snap1 children {}".format(names(snap1.get_children())))
        in_pool = system.volumes.find(pool=pool, type="SNAPSHOT").to_list()
        check(ids(in_pool) == ids([snap1, unnamed, writable, nested]), "snapshots in the pool {}".format(names(in_pool)))
        masters = system.volumes.find(pool=pool, type="MASTER").to_list()
        check(ids(masters) == ids([vol1, vol2]), "masters in the pool {}".format(names(masters)))

        step("group snapshot of two volumes")
        group = system.volumes.create_group_snapshot([vol1, vol2])  # POST volumes/group_snapshot
        created_volumes[:0] = group
        check(len(group) == 2 and all(s is not None for s in group), "group snapshot gave {!r}".format(group))
        check([s.get_parent() for s in group] == [vol1, vol2], "group snapshot parents wrong")
        check(all(s.is_snapshot() for s in group), "group snapshot members are not snapshots")
        prefix = group[0].get_name()[: -len(vol1.get_name())]
        check(prefix and [s.get_name() for s in group] == [prefix + vol1.get_name(), prefix + vol2.get_name()],
              "group snapshot names {}".format([s.get_name() for s in group]))
        check(group[1].get_size() == 2 * GiB, "a group snapshot member has its own volume's size")

        # ---------------------------------------------------------------- restore, refresh
        step("restore a volume from its snapshot; refresh a snapshot")
        check(vol1.restore(snap1) is None, "restore answered something unexpected")  # bare id as the body
        check(vol1.is_master() and vol1.get_size(from_cache=False) == GiB, "the restored volume changed type or size")
        check(nested.restore(snap1) is None, "restoring a snapshot from its family failed")
        snap1.refresh_snapshot()  # POST volumes/<snap>/refresh {"source_id": parent}
        check(snap1.get_parent() == vol1 and snap1.is_snapshot(), "the refreshed snapshot changed parent or type")
        expect_failure("restore from a snapshot of another family", lambda: vol2.restore(snap1), 400, "BAD_REQUEST")
        expect_failure("refresh a master volume",
                       lambda: system.api.post("volumes/{}/refresh".format(vol1.id), data={"source_id": vol1.id}),
                       400, "BAD_REQUEST")
        expect_failure("delete a volume that has snapshots", lambda: vol1.delete(), 400, "BAD_REQUEST")
        check(vol1.is_in_system(), "the refused delete removed the volume")

        step("delete snapshots")
        for snap in (nested, unnamed, writable):
            snap.delete()
            created_volumes.remove(snap)
            check(not snap.is_in_system(), "snapshot {} still there".format(snap.get_name()))
        for snap in group:
            snap.delete()
            created_volumes.remove(snap)
        check(ids(vol1.get_children()) == [snap1.id], "vol1 children after deletes {}".format(names(vol1.get_children())))

        # ---------------------------------------------------------------- consistency groups
        step("consistency group with two members")
        cg = system.cons_groups.create(pool=pool, name="snap_{}_cg".format(RUN))  # POST cgs
        check(cg.is_master() and not cg.is_snapgroup(), "a new group is not MASTER")
        check(cg.get_pool() == pool, "group pool {!r}".format(cg.get_pool()))
        cg.add_member(vol1)  # GET replicas?local_cg_id=eq:<cg>, POST cgs/<cg>/members {dataset_id}
        cg.add_member(vol2)
        check(ids(cg.get_members()) == ids([vol1, vol2]), "members {}".format(names(cg.get_members())))
        check(cg.get_members_count(from_cache=False) == 2, "members_count {}".format(cg.get_members_count(from_cache=False)))
        check(vol1.get_cons_group(from_cache=False) == cg, "vol1 cons group {!r}".format(vol1.get_cons_group(from_cache=False)))
        expect_failure("a snapshot joins a group", lambda: cg.add_member(snap1), 400, "BAD_REQUEST")
        expect_failure("read a missing group",
                       lambda: system.cons_groups.get_by_id_lazy(987654321).get_name(from_cache=False),
                       404, "CONS_GROUP_NOT_FOUND")

        step("snapshot groups")
        sg = cg.create_snapshot()  # POST cgs {snap_prefix: null, parent_id, snap_suffix, name}
        check(sg.is_snapgroup() and not sg.is_master(), "group snapshot type {!r}".format(sg.get_type()))
        check(sg.get_parent() == cg, "group snapshot parent {!r}".format(sg.get_parent()))
        members = sg.get_members().to_list()
        check(len(members) == 2 and all(m.is_snapshot() for m in members), "group snapshot members {}".format(names(members)))
        check(sorted(m.get_parent().id for m in members) == ids([vol1, vol2]), "group snapshot members' parents wrong")
        sg_named = cg.create_snapgroup(name="snap_{}_sg".format(RUN), prefix="pre_")
        check(sg_named.get_name() == "snap_{}_sg".format(RUN), "named group snapshot {!r}".format(sg_named.get_name()))
        check(sorted(m.get_name() for m in sg_named.get_members()) == sorted("pre_" + v.get_name() for v in (vol1, vol2)),
              "prefixed member names {}".format(names(sg_named.get_members())))
        check(ids(cg.get_snapgroups()) == ids([sg, sg_named]), "snapgroups {}".format(names(cg.get_snapgroups())))
        check(ids(vol2.get_snapshots()) == sorted(m.id for m in members + sg_named.get_members().to_list()
                                                   if m.get_parent().id == vol2.id),
              "vol2 snapshots {}".format(names(vol2.get_snapshots())))

        step("restore a group; refresh a group snapshot")
        check(cg.restore(sg) is None, "group restore answered something unexpected")  # POST cgs/<cg>/restore
        sg.refresh_snapgroup()  # POST cgs/<sg>/refresh {"source_id": cg}
        check(sg.get_parent() == cg and len(sg.get_members()) == 2, "the refreshed group snapshot changed")
        other = system.cons_groups.create(pool=pool, name="snap_{}_other".format(RUN))
        # other.restore(sg) would fail in infinisdk itself (other has none of sg's parents).
        expect_failure("restore a group from another group's snapshot",
                       lambda: system.api.post("cgs/{}/restore".format(other.id), data={"source_id": sg.id}),
                       400, "BAD_REQUEST")
        other.delete()
        check(not other.is_in_system(), "the empty group is still there")

        step("delete a group snapshot, remove a member, delete the group with its members")
        named_members = sg_named.get_members().to_list()
        sg_named.delete()
        check(not sg_named.is_in_system(), "the group snapshot is still there")
        check(not any(m.is_in_system() for m in named_members), "a group snapshot's snapshots outlived it")
        cg.remove_member(vol2)  # DELETE cgs/<cg>/members/<vol>
        check(ids(cg.get_members()) == [vol1.id], "members after remove {}".format(names(cg.get_members())))
        check(vol2.get_cons_group(from_cache=False) is None, "the removed member still names the group")
        sg.delete()
        snap1.delete()
        created_volumes.remove(snap1)
        cg.delete(delete_members=True)  # DELETE cgs/<cg>?delete_members=true
        created_volumes.remove(vol1)
        check(not cg.is_in_system(), "the group is still there")
        check(not vol1.is_in_system(), "delete_members=true left the member")
        check(vol2.is_in_system(), "delete_members=true deleted a volume that had left the group")

        # ---------------------------------------------------------------- locks
        step("a locked snapshot resists the admin")
        until = arrow.utcnow().shift(hours=1)
        locked = vol2.create_snapshot(name="snap_{}_locked".format(RUN), lock_expires_at=until)
        # The create answer fills infinisdk's cache with the lock fields.
        check(locked.get_lock_state() == "LOCKED", "lock_state {!r}".format(locked.get_lock_state()))
        expires = locked.get_lock_expires_at()
        check(abs(expires.float_timestamp - until.float_timestamp) < 0.002, "lock_expires_at {} != {}".format(expires, until))
        expect_failure("admin deletes a locked snapshot", lambda: locked.delete(), 409, "SNAPSHOT_LOCKED")
        expect_failure("admin deletes a locked snapshot with force_if_snapshot_locked",
                       lambda: locked.delete(force_if_snapshot_locked=True), 409, "SNAPSHOT_LOCKED")
        expect_failure("rename a locked snapshot", lambda: locked.update_name("snap_{}_renamed".format(RUN)), 409, "SNAPSHOT_LOCKED")
        expect_failure("refresh a locked snapshot", lambda: locked.refresh_snapshot(), 409, "SNAPSHOT_LOCKED")
        other_snap = vol2.create_snapshot(name="snap_{}_plain".format(RUN))
        expect_failure("restore into a locked snapshot", lambda: locked.restore(other_snap), 409, "SNAPSHOT_LOCKED")
        earlier = int(until.shift(minutes=-30).float_timestamp * 1000)
        expect_failure("shorten the lock",
                       lambda: system.api.put("volumes/{}".format(locked.id), data={"lock_expires_at": earlier}),
                       409, "SNAPSHOT_LOCKED")
        later = int(until.shift(minutes=30).float_timestamp * 1000)
        system.api.put("volumes/{}".format(locked.id), data={"lock_expires_at": later})
        check(raw_volume(system, locked)["lock_expires_at"] == later, "the lock was not extended")
        check(locked.is_in_system() and locked.get_name(from_cache=False) == "snap_{}_locked".format(RUN),
              "the locked snapshot changed")
        expect_failure("lock in the past",
                       lambda: vol2.create_snapshot(name="snap_{}_past".format(RUN), lock_expires_at=arrow.utcnow().shift(hours=-1)),
                       400, "BAD_REQUEST")
        other_snap.delete()
        # The locked snapshot, vol2 and the pool stay: nobody can delete them for 90 minutes.
        print("infinisdk:   left behind on purpose: locked snapshot {} and its volume and pool".format(locked.get_name()))
        created_volumes[:] = []
        created_pools[:] = []

        step("a short lock expires, then the snapshot can be deleted")
        short = vol2.create_snapshot(name="snap_{}_short".format(RUN), lock_expires_at=arrow.utcnow().shift(seconds=5))
        expect_failure("delete before the lock expires", lambda: short.delete(), 409, "SNAPSHOT_LOCKED")
        time.sleep(max(0.0, short.get_lock_expires_at().float_timestamp - time.time()) + 0.5)
        check(raw_volume(system, short)["lock_state"] == "EXPIRED", "lock_state after expiry {!r}".format(raw_volume(system, short)["lock_state"]))
        short.delete()
        check(not short.is_in_system(), "the snapshot with an expired lock is still there")

        step("logout")
        system.logout()
        system = None
    except Exception as error:  # a failed check or anything infinisdk raised
        failed = PASSED.pop() if PASSED else "setup"
        print("infinisdk: FAILED at step {!r}: {}".format(failed, error), file=sys.stderr)
        if not isinstance(error, StepFailed):
            traceback.print_exc()
        cleanup(system, created_volumes, created_pools, [])
        print("infinisdk: {} passed, 1 failed".format(len(PASSED)))
        return 1
    print("infinisdk: {} passed, 0 failed".format(len(PASSED)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
