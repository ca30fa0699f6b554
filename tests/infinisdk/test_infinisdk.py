#!/usr/bin/env python3
"""Drives troika's management REST API with the real `infinisdk` client (InfiniBox's SDK).

Standalone: plain Python with asserts, no pytest. Exit code 0 when every step passes.

Configuration (environment):
  TROIKA_URL_HOST        host of the REST API (default 127.0.0.1)
  TROIKA_URL_PORT        TCP port of the REST API (required)
  TROIKA_USE_SSL         1: https (verify with REQUESTS_CA_BUNDLE, e.g. DATA/tls/server-cert.pem);
                         otherwise plain http (a node started with --mgmt-tls off)
  TROIKA_ADMIN_PASSWORD  password of the built-in user "admin" (required)
  TROIKA_INFINISDK_BULK  optional: if set to N > 0, also time creating and deleting N volumes
  TROIKA_FORBIDDEN_CODE  optional: the error code expected with a 403 for a missing
                         permission (default PERMISSION_DENIED)

Needs: pip install infinisdk==289.1.4   (see NOTES.md beside this file)
"""

import os
import sys
import time
import traceback
import uuid

from capacity import GiB

from infinisdk import InfiniBox, Q
from infinisdk.core.exceptions import APICommandFailed

HOST = os.environ.get("TROIKA_URL_HOST", "127.0.0.1")
PORT = os.environ.get("TROIKA_URL_PORT")
USE_SSL = os.environ.get("TROIKA_USE_SSL") == "1"
ADMIN_PASSWORD = os.environ.get("TROIKA_ADMIN_PASSWORD")
BULK = int(os.environ.get("TROIKA_INFINISDK_BULK", "0") or "0")
FORBIDDEN_CODE = os.environ.get("TROIKA_FORBIDDEN_CODE", "PERMISSION_DENIED")

RUN = uuid.uuid4().hex[:8]  # unique names: the test may run again on the same server
PASSED = []


class StepFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise StepFailed(message)


def step(name):
    """Decorator-free step marker: prints the step and counts it when the block ends."""
    print("infinisdk: step: {}".format(name), flush=True)
    PASSED.append(name)


def connect(user, password):
    # use_ssl=True means https://HOST:PORT/api/rest, verified by requests against
    # REQUESTS_CA_BUNDLE (the node's certificate); verification is never turned off.
    system = InfiniBox((HOST, int(PORT)), auth=(user, password), use_ssl=USE_SSL)
    system.login()
    return system


def expect_failure(what, func, status, code):
    """Runs func, which must raise APICommandFailed with the given HTTP status and error code."""
    try:
        result = func()
    except APICommandFailed as error:
        check(
            error.status_code == status and error.error_code == code,
            "{}: expected HTTP {} with error code {!r}, got HTTP {} with code {!r} ({})".format(
                what, status, code, error.status_code, error.error_code, error.message
            ),
        )
        print("infinisdk:   {} -> HTTP {} {} ({})".format(what, error.status_code, error.error_code, error.message))
        return error
    raise StepFailed("{}: expected HTTP {} {}, but it succeeded: {!r}".format(what, status, code, result))


def names(objects):
    return sorted(o.get_name() for o in objects)


def main():
    if not PORT or ADMIN_PASSWORD is None:
        print("infinisdk: set TROIKA_URL_PORT and TROIKA_ADMIN_PASSWORD (and TROIKA_URL_HOST)", file=sys.stderr)
        return 2

    created_volumes, created_pools, created_users = [], [], []
    system = None
    try:
        # ---------------------------------------------------------------- login
        step("login as admin")
        system = connect("admin", ADMIN_PASSWORD)
        version = system.get_version()
        check(isinstance(version, str) and version, "system version missing: {!r}".format(version))
        print("infinisdk:   system name={!r} version={!r} serial={!r}".format(
            system.get_name(), version, system.get_serial()))

        step("wrong password is refused")
        bad = InfiniBox((HOST, int(PORT)), auth=("admin", ADMIN_PASSWORD + "-wrong"), use_ssl=USE_SSL)
        try:
            bad.login()
        except APICommandFailed as error:
            check(error.status_code in (401, 403), "wrong password gave HTTP {}".format(error.status_code))
            print("infinisdk:   wrong password -> HTTP {} {}".format(error.status_code, error.error_code))
        else:
            raise StepFailed("login with a wrong password succeeded")

        last_event = system.events.get_last_event()  # GET events?sort=-id&page_size=1&page=1
        first_event_id = last_event.id if last_event is not None else 0

        # ---------------------------------------------------------------- pools
        step("create pools A and B")
        pool_a = system.pools.create(name="sdk_{}_A".format(RUN), physical_capacity=100 * GiB, virtual_capacity=100 * GiB)
        created_pools.append(pool_a)
        pool_b = system.pools.create(name="sdk_{}_B".format(RUN), physical_capacity=20 * GiB, virtual_capacity=20 * GiB)
        created_pools.append(pool_b)
        check(isinstance(pool_a.id, int) and pool_a.id != pool_b.id, "pool ids {!r} {!r}".format(pool_a.id, pool_b.id))
        check(pool_a.get_name(from_cache=False) == "sdk_{}_A".format(RUN), "pool A name read back wrong")
        check(pool_a.get_physical_capacity(from_cache=False) == 100 * GiB, "pool A physical capacity read back wrong")
        check(pool_a.get_virtual_capacity(from_cache=False) == 100 * GiB, "pool A virtual capacity read back wrong")
        found = system.pools.find(name="sdk_{}_B".format(RUN)).to_list()
        check(found == [pool_b], "pools.find(name=B) gave {!r}".format(found))
        expect_failure("pool with a taken name",
                       lambda: system.pools.create(name=pool_a.get_name(), physical_capacity=GiB, virtual_capacity=GiB),
                       409, "NAME_CONFLICT")

        # ---------------------------------------------------------------- volumes
        step("create volumes")
        sizes_a = [1, 2, 3, 4, 5]
        vols_a = []
        for i, gib in enumerate(sizes_a):
            provisioning = "THIN" if i % 2 else "THICK"
            vol = system.volumes.create(pool=pool_a, size=gib * GiB, name="sdk_{}_a{}".format(RUN, i), provisioning=provisioning)
            created_volumes.append(vol)
            vols_a.append(vol)
            check(isinstance(vol.id, int), "volume id {!r}".format(vol.id))
            check(vol.get_size() == gib * GiB, "volume size {} != {} GiB".format(vol.get_size(), gib))
            check(vol.get_pool() == pool_a, "volume pool {!r} != {!r}".format(vol.get_pool(), pool_a))
            check(vol.get_provisioning(from_cache=False) == provisioning, "provtype read back wrong")
        vols_b = []
        for i in range(2):
            vol = system.volumes.create(pool=pool_b, size=GiB, name="sdk_{}_b{}".format(RUN, i))
            created_volumes.append(vol)
            vols_b.append(vol)
        check(vols_a[2].get_size(from_cache=False) == 3 * GiB, "GET volume ?fields=size gave a wrong size")
        check(vols_a[2].get_name(from_cache=False) == "sdk_{}_a2".format(RUN), "GET volume ?fields=name wrong")
        expect_failure("volume with a taken name",
                       lambda: system.volumes.create(pool=pool_a, size=GiB, name=vols_a[0].get_name()),
                       409, "NAME_CONFLICT")
        expect_failure("volume larger than its pool",
                       lambda: system.volumes.create(pool=pool_b, size=40 * GiB, name="sdk_{}_huge".format(RUN)),
                       409, "POOL_CAPACITY_EXCEEDED")
        check(not system.volumes.find(name="sdk_{}_huge".format(RUN)).to_list(), "the refused volume exists")
        expect_failure("volume in a missing pool",
                       lambda: system.volumes.create(pool=system.pools.get_by_id_lazy(987654321), size=GiB,
                                                     name="sdk_{}_nopool".format(RUN)),
                       404, "POOL_NOT_FOUND")

        # ---------------------------------------------------------------- listing
        step("list with filters and sorting")
        all_names = names(system.volumes.to_list())
        for vol in vols_a + vols_b:
            check(vol.get_name() in all_names, "{} missing from volumes.to_list()".format(vol.get_name()))
        in_a = system.volumes.find(pool=pool_a).to_list()
        check(names(in_a) == names(vols_a), "volumes.find(pool=A) gave {}".format(names(in_a)))
        by_name = system.volumes.find(name="sdk_{}_a3".format(RUN)).to_list()
        check(by_name == [vols_a[3]], "volumes.find(name=a3) gave {!r}".format(by_name))
        big = system.volumes.find(system.volumes.fields.size > 3 * GiB, pool=pool_a).to_list()
        check(names(big) == names(vols_a[3:]), "size > 3 GiB in pool A gave {}".format(names(big)))
        small = system.volumes.find(Q.size <= 2 * GiB, Q.pool_id == pool_a.id).to_list()
        check(names(small) == names(vols_a[:2]), "size <= 2 GiB in pool A gave {}".format(names(small)))
        ordered = system.volumes.find(pool=pool_a).sort(-system.volumes.fields.size).to_list()
        check([v.get_size() for v in ordered] == sorted((g * GiB for g in sizes_a), reverse=True),
              "sort=-size gave {}".format([str(v.get_size()) for v in ordered]))
        check(system.volumes.find(pool=pool_a).count() == len(vols_a), "count() of pool A volumes wrong")

        step("paging")
        page_size = 2
        raw = system.api.get("volumes", params={"pool_id": "eq:{}".format(pool_a.id), "page": 1, "page_size": page_size})
        meta = raw.get_metadata()
        expected_pages = (len(vols_a) + page_size - 1) // page_size
        check(meta["number_of_objects"] == len(vols_a), "metadata.number_of_objects {!r}".format(meta))
        check(meta["page"] == 1 and meta["page_size"] == page_size, "metadata.page/page_size {!r}".format(meta))
        check(meta["pages_total"] == expected_pages, "metadata.pages_total {!r}".format(meta))
        seen = []
        for page in range(1, expected_pages + 1):
            got = system.volumes.find(pool=pool_a).sort(system.volumes.fields.id).page_size(page_size).page(page).to_list()
            check(len(got) == min(page_size, len(vols_a) - (page - 1) * page_size),
                  "page {} had {} volumes".format(page, len(got)))
            seen.extend(v.id for v in got)
        check(sorted(seen) == sorted(v.id for v in vols_a) and len(set(seen)) == len(seen),
              "pages did not cover every volume exactly once: {}".format(seen))

        # ---------------------------------------------------------------- updates
        step("resize a volume")
        vol = vols_a[0]
        vol.resize(2 * GiB)  # 1 GiB + 2 GiB
        check(vol.get_size(from_cache=False) == 3 * GiB, "after resize(+2 GiB) size is {}".format(vol.get_size(from_cache=False)))
        vol.update_size(4 * GiB)
        check(vol.get_size(from_cache=False) == 4 * GiB, "after update_size(4 GiB) size is {}".format(vol.get_size(from_cache=False)))

        step("rename a volume")
        new_name = "sdk_{}_renamed".format(RUN)
        vol.update_name(new_name)
        check(vol.get_name(from_cache=False) == new_name, "rename not visible")
        check(system.volumes.find(name=new_name).to_list() == [vol], "find(name=new name) does not find it")
        check(not system.volumes.find(name="sdk_{}_a0".format(RUN)).to_list(), "old name still found")
        vol.update_field("name", "sdk_{}_a0".format(RUN))
        check(vol.get_name(from_cache=False) == "sdk_{}_a0".format(RUN), "update_field(name) not visible")
        pool_b.update_name("sdk_{}_B2".format(RUN))
        check(pool_b.get_name(from_cache=False) == "sdk_{}_B2".format(RUN), "pool rename not visible")

        # ---------------------------------------------------------------- events
        step("events")
        everything = system.events.to_list()
        check(len(everything) > 0, "no events at all")
        levels = system.events.get_levels()  # GET events/types
        check("INFO" in levels, "events/types levels {!r}".format(levels))
        info = system.events.find(level="INFO").to_list()
        check(info and all(e.get_level() == "INFO" for e in info), "events.find(level=INFO) wrong")
        created = system.events.find(system.events.fields.id > first_event_id, code="VOLUME_CREATED").to_list()
        check(len(created) >= len(vols_a) + len(vols_b),
              "{} VOLUME_CREATED events since id {}, expected >= {}".format(len(created), first_event_id, len(vols_a) + len(vols_b)))
        for event in created:
            check(event["code"] == "VOLUME_CREATED" and event.get_timestamp() is not None, "odd event {!r}".format(dict(event)))
        print("infinisdk:   {} events, {} new VOLUME_CREATED".format(len(everything), len(created)))

        # ---------------------------------------------------------------- users and permissions
        step("create users")
        password = "Pw-{}-x".format(RUN)
        reader = system.users.create(name="sdk_{}_ro".format(RUN), role="READ_ONLY", password=password,
                                     email="ro_{}@example.com".format(RUN))
        created_users.append(reader)
        pool_admin = system.users.create(name="sdk_{}_pa".format(RUN), role="POOL_ADMIN", password=password,
                                         email="pa_{}@example.com".format(RUN))
        created_users.append(pool_admin)
        check(reader.get_role(from_cache=False) == "READ_ONLY", "reader role read back wrong")
        check(pool_admin.get_role(from_cache=False) == "POOL_ADMIN", "pool admin role read back wrong")
        check(system.users.find(name="sdk_{}_pa".format(RUN)).to_list() == [pool_admin], "users.find(name) wrong")
        pool_a.set_owners([pool_admin])  # PUT pools/A {"owners": [id]}
        check(pool_a.get_owners(from_cache=False) == [pool_admin], "pool A owners {!r}".format(pool_a.get_owners(from_cache=False)))
        check(pool_b.get_owners(from_cache=False) == [], "pool B owners should be empty")

        step("READ_ONLY user cannot create a volume")
        ro_system = connect(reader.get_name(), password)
        check(len(ro_system.volumes.find(pool_id=pool_a.id).to_list()) == len(vols_a), "reader cannot list volumes")
        denied_name = "sdk_{}_denied_ro".format(RUN)
        expect_failure("READ_ONLY creates a volume",
                       lambda: ro_system.volumes.create(pool=ro_system.pools.get_by_id_lazy(pool_a.id), size=GiB, name=denied_name),
                       403, FORBIDDEN_CODE)
        check(not system.volumes.find(name=denied_name).to_list(), "the refused volume was created anyway")
        expect_failure("READ_ONLY deletes a volume",
                       lambda: ro_system.volumes.get_by_id_lazy(vols_a[1].id).delete(), 403, FORBIDDEN_CODE)
        check(vols_a[1].is_in_system(), "the volume a READ_ONLY user tried to delete is gone")
        ro_system.logout()

        step("POOL_ADMIN may create only in an owned pool")
        pa_system = connect(pool_admin.get_name(), password)
        denied_name = "sdk_{}_denied_pa".format(RUN)
        expect_failure("POOL_ADMIN creates in pool B (not owned)",
                       lambda: pa_system.volumes.create(pool=pa_system.pools.get_by_id_lazy(pool_b.id), size=GiB, name=denied_name),
                       403, FORBIDDEN_CODE)
        check(not system.volumes.find(name=denied_name).to_list(), "the refused volume was created anyway")
        mine = pa_system.volumes.create(pool=pa_system.pools.get_by_id_lazy(pool_a.id), size=GiB, name="sdk_{}_pa_vol".format(RUN))
        created_volumes.append(system.volumes.get_by_id_lazy(mine.id))
        check(system.volumes.find(name="sdk_{}_pa_vol".format(RUN)).to_list() == [system.volumes.get_by_id_lazy(mine.id)],
              "the pool admin's volume is not listed")
        expect_failure("POOL_ADMIN creates a pool",
                       lambda: pa_system.pools.create(name="sdk_{}_pa_pool".format(RUN), physical_capacity=GiB, virtual_capacity=GiB),
                       403, FORBIDDEN_CODE)
        mine.delete()
        created_volumes.pop()
        pa_system.logout()

        # ---------------------------------------------------------------- deletes
        step("delete volumes and pools")
        for vol in list(created_volumes):
            vol.delete()
            created_volumes.remove(vol)
            check(not vol.is_in_system(), "volume {} still there after delete".format(vol.id))
        expect_failure("read a deleted volume", lambda: vols_a[0].get_size(from_cache=False), 404, "VOLUME_NOT_FOUND")
        for pool in list(created_pools):
            pool.delete()
            created_pools.remove(pool)
            check(not pool.is_in_system(), "pool {} still there after delete".format(pool.id))
        expect_failure("read a deleted pool", lambda: pool_a.get_name(from_cache=False), 404, "POOL_NOT_FOUND")
        for user in list(created_users):
            user.delete()
            created_users.remove(user)

        # ---------------------------------------------------------------- bulk
        if BULK > 0:
            step("bulk: create and delete {} volumes".format(BULK))
            # Thin volumes: a small physical capacity, a virtual one that holds them all.
            pool = system.pools.create(name="sdk_{}_bulk".format(RUN), physical_capacity=16 * GiB,
                                       virtual_capacity=(BULK + 16) * GiB)
            created_pools.append(pool)
            bulk = []
            start = time.monotonic()
            for i in range(BULK):
                vol = system.volumes.create(pool=pool, size=GiB, name="sdk_{}_bulk{}".format(RUN, i), provisioning="THIN")
                bulk.append(vol)
                created_volumes.append(vol)
            created_s = time.monotonic() - start
            listed = system.volumes.find(pool=pool).to_list()  # default page (50) then page=1&page_size=1000
            check(len(listed) == BULK and len({v.id for v in listed}) == BULK,
                  "listing the bulk pool gave {} volumes".format(len(listed)))
            start = time.monotonic()
            for vol in bulk:
                vol.delete()
                created_volumes.remove(vol)
            deleted_s = time.monotonic() - start
            pool.delete()
            created_pools.remove(pool)
            print("infinisdk: created {} volumes in {:.2f} s, deleted in {:.2f} s".format(BULK, created_s, deleted_s))

        step("logout")
        system.logout()
        system = None
    except Exception as error:  # a failed check or anything infinisdk raised
        failed = PASSED.pop() if PASSED else "setup"
        print("infinisdk: FAILED at step {!r}: {}".format(failed, error), file=sys.stderr)
        if not isinstance(error, StepFailed):
            traceback.print_exc()
        cleanup(system, created_volumes, created_pools, created_users)
        print("infinisdk: {} passed, 1 failed".format(len(PASSED)))
        return 1
    print("infinisdk: {} passed, 0 failed".format(len(PASSED)))
    return 0


def cleanup(system, volumes, pools, users):
    """Best effort: leave the server as it was found."""
    if system is None:
        return
    for items in (volumes, pools, users):
        for item in items:
            try:
                item.delete()
            except Exception as error:  # pylint: disable=broad-except
                print("infinisdk:   cleanup of {!r} failed: {}".format(item, error), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
