"""`doctorai studies`: release a held study, or route a stored study again."""

import argparse

from doctorai.cli.database import database


def studies(args: argparse.Namespace) -> int:
    """Release a held study, or route a stored study again, at a new revision (as the admin API does)."""
    from integration.studies import release_study, reprocess_study

    act = release_study if args.action == "release" else reprocess_study
    with database() as engine:
        ready = act(engine, study_uid=args.study_uid, who=args.who)
    print(f"{ready.study_uid} revision {ready.revision} announced ({ready.reason})")
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`doctorai studies release|reprocess STUDY_UID`."""
    p_studies = sub.add_parser("studies", help="release a held (or still receiving) study, or route a study again")
    p_studies.add_argument("action", choices=["release", "reprocess"])
    p_studies.add_argument("study_uid")
    p_studies.add_argument("--who", default="local-cli", help="who asks, for the audit trail")
    p_studies.set_defaults(func=studies)
