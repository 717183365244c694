"""`doctorai index backfill`: the Query/Retrieve keys of studies indexed before the index kept them."""

import argparse
import logging
import struct
import sys

from doctorai.cli.database import database

log = logging.getLogger(__name__)


def backfill(args: argparse.Namespace) -> int:
    """Read one stored instance's header per study indexed before INDEX_VERSION and give the study its details.

    Idempotent and resumable: a study is done once its row says so, so a run stopped by an outage
    goes on where it stopped.
    """
    from pydicom.errors import InvalidDicomError

    from integration.instances.metadata import header_values, study_details
    from integration.facts import read_header
    from storage.config import get_settings
    from storage.db import session_scope
    from storage.errors import StorageUnavailable
    from storage.instances import backfill_candidates, set_details
    from storage.objects import make_object_store

    objects = make_object_store(get_settings())
    done = 0
    with database() as engine:
        while True:
            with session_scope(engine) as session:
                batch = backfill_candidates(session, limit=args.batch)
            if not batch:
                break
            for study_uid, key in batch:
                try:
                    details = study_details(header_values(read_header(objects, key)))
                except StorageUnavailable as exc:
                    print(f"doctorai index backfill: {exc}; {done} studies done, run it again to go on", file=sys.stderr)
                    return 1
                except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError, struct.error) as exc:
                    log.warning("header of %s unreadable (%s): study %s keeps empty details", key, type(exc).__name__, study_uid)
                    details = None
                with session_scope(engine) as session:
                    set_details(session, study_uid=study_uid, details=details)
                done += 1
    print(f"{done} studies given their Query/Retrieve keys")
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`doctorai index backfill`."""
    p_index = sub.add_parser("index", help="the study index")
    actions = p_index.add_subparsers(dest="action", required=True)
    p_backfill = actions.add_parser(
        "backfill", help="read the Query/Retrieve keys (patient name, birth date, study time...) of studies indexed before they were kept"
    )
    p_backfill.add_argument("--batch", type=int, default=100, help="studies per database read")
    p_backfill.set_defaults(func=backfill)
