#!/usr/bin/env python3
"""Drive enclosures and drives through the real `infinisdk` client (InfiniBox's SDK), as
`system.components` reads them from troika's REST API, on a node of hw/ci-raid.toml
(10 drives in one enclosure).

Reads `system.components.enclosures` and `.drives` (infinisdk fetches the whole rack tree
with `GET components` and builds its objects from it), checks every drive's index,
enclosure, serial number, capacity and state, then fails drive 10 through the API
(refused without approval inside `get_unapproved_context`, accepted with it) and reads its
new state with `drive.get_state()`, which fetches the drive alone
(`GET components/enclosures/1/drives/10?fields=state`).

Standalone like test_infinisdk.py (same environment variables, same output); its helpers
come from there. Exit code 0 when every step passes.

Needs: pip install infinisdk==289.1.4   (see NOTES.md beside this file)
"""

import sys
import traceback

from test_infinisdk import (
    ADMIN_PASSWORD,
    PASSED,
    PORT,
    StepFailed,
    check,
    connect,
    expect_failure,
    step,
)

DRIVES = 10
DRIVE_BYTES = 96 * 1024 * 1024


def main():
    if not PORT or ADMIN_PASSWORD is None:
        print("infinisdk: set TROIKA_URL_PORT and TROIKA_ADMIN_PASSWORD (and TROIKA_URL_HOST)", file=sys.stderr)
        return 2
    system = None
    try:
        step("login as admin")
        system = connect("admin", ADMIN_PASSWORD)

        step("list the enclosures")
        enclosures = system.components.enclosures.get_all()
        indexes = [enclosure.get_index() for enclosure in enclosures]
        check(indexes == [1], "enclosure indexes {!r}".format(indexes))
        enclosure = enclosures[0]
        check(len(enclosure.get_drives()) == DRIVES, "enclosure 1 holds {} drives".format(len(enclosure.get_drives())))

        step("list the drives with their fields")
        drives = sorted(system.components.drives.get_all(), key=lambda drive: drive.get_index())
        check([drive.get_index() for drive in drives] == list(range(1, DRIVES + 1)),
              "drive indexes {!r}".format([drive.get_index() for drive in drives]))
        serials = set()
        for drive in drives:
            check(drive.get_enclosure_index() == 1, "drive {} enclosure_index".format(drive.get_index()))
            check(drive.get_enclosure() == enclosure, "drive {} enclosure".format(drive.get_index()))
            check(drive.get_capacity().bits // 8 == DRIVE_BYTES,
                  "drive {} capacity {}".format(drive.get_index(), drive.get_capacity()))
            check(drive.is_active(), "drive {} state {!r}".format(drive.get_index(), drive.get_state()))
            serial = drive.get_serial_number()
            check(isinstance(serial, str) and serial, "drive {} serial {!r}".format(drive.get_index(), serial))
            serials.add(serial)
        check(len(serials) == DRIVES, "serial numbers are not unique: {!r}".format(serials))

        step("find one drive by index")
        last = system.components.drives.get(index=DRIVES)
        check(last.get_index() == DRIVES, "got drive {}".format(last.get_index()))

        step("failing a drive needs approval")
        fail_path = "components/enclosures/1/drives/{}/fail".format(DRIVES)
        with system.api.get_unapproved_context():
            expect_failure("an unapproved drive fail", lambda: system.api.post(fail_path), 403, "APPROVAL_REQUIRED")
        check(last.is_active(), "the refused fail changed drive {}: {!r}".format(DRIVES, last.get_state()))

        step("fail a drive and read its new state")
        system.api.post(fail_path)
        state = last.get_state()
        check(state in ("FAILED", "REBUILDING"), "drive {} state after the fail {!r}".format(DRIVES, state))
        check(not last.is_active(), "drive {} still reads ACTIVE".format(DRIVES))
        check(system.components.drives.get(index=1).is_active(), "drive 1 is no longer ACTIVE")

        step("logout")
        system.logout()
        system = None
    except Exception as error:  # a failed check or anything infinisdk raised
        failed = PASSED.pop() if PASSED else "setup"
        print("infinisdk: FAILED at step {!r}: {}".format(failed, error), file=sys.stderr)
        if not isinstance(error, StepFailed):
            traceback.print_exc()
        print("infinisdk: {} passed, 1 failed".format(len(PASSED)))
        return 1
    print("infinisdk: {} passed, 0 failed".format(len(PASSED)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
