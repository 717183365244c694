"""`doctorai models`: add model packages to the registry, list them, activate, roll back and retire
versions (integration.models: the same rules as the admin API's)."""

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from doctorai.cli.database import database
from storage.config import get_settings as get_storage_settings


def _add(args: argparse.Namespace) -> int:
    """Upload package directories or builtin packages; activate them when asked."""
    from inference.packages import lookup
    from integration.models import packages, registry
    from storage.db import session_scope
    from storage.model_packages import active_model_version
    from storage.objects import make_object_store

    storage = get_storage_settings()
    if args.builtin:
        sources = [lookup(name, storage.var_dir / "builtin-packages") for name in args.builtin]
    elif args.path:
        sources = [packages.read_package(Path(args.path))]
    else:
        raise ValueError("give PATH or --builtin NAME")
    objects = make_object_store(storage)
    objects.ensure_bucket()
    with database() as engine:
        for manifest, artifact in sources:
            # The builtins are our own code: their legacy artifacts (deepbet's TorchScript) are allowed.
            packages.upload(engine, objects, manifest, artifact, allow_legacy_format=bool(args.builtin))
            with session_scope(engine) as session:
                if args.activate:
                    registry.activate(session, name=manifest.name, version=manifest.version)
                elif args.activate_first:
                    registry.activate_first(session, name=manifest.name, version=manifest.version)
                active = active_model_version(session, name=manifest.name) == manifest.version
            print(f"{manifest.name} {manifest.version} registered{' and active' if active else ''}")
    return 0


def _change(args: argparse.Namespace) -> int:
    """List the registered versions, or activate, roll back or retire one."""
    from integration.models import registry
    from storage.db import session_scope
    from storage.model_packages import model_packages

    with database() as engine, session_scope(engine) as session:
        if args.action == "list":
            for row in model_packages(session, name=args.name):
                activated = f"{row.activated_at:%Y-%m-%d %H:%M:%S}" if row.activated_at else "-"
                print(f"{row.name:24} {row.version:16} {row.framework:12} {row.status:9} activated {activated}")
            # Issue 16: a rule whose model nothing runs gives its studies no job and no explanation.
            for warning in registry.rule_warnings(session, now=datetime.now(UTC)):
                print(f"warning: rule {warning.rule} runs {warning.model}: {warning.problem}", file=sys.stderr)
        elif args.action == "activate":
            registry.activate(session, name=args.name, version=args.version)
            print(f"{args.name} {args.version} active")
        elif args.action == "rollback":
            print(f"{args.name} {registry.rollback(session, name=args.name)} active")
        elif args.action == "retire":
            registry.retire(session, name=args.name, version=args.version)
            print(f"{args.name} {args.version} retired")
    return 0


def models(args: argparse.Namespace) -> int:
    """Add, list, activate, roll back and retire model packages (a refusal exits 1, naming it: cli.main)."""
    return _add(args) if args.action == "add" else _change(args)


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`doctorai models add|list|activate|rollback|retire`."""
    p_models = sub.add_parser("models", help="the model registry: add, list, activate, rollback, retire")
    p_models.set_defaults(func=models)
    actions = p_models.add_subparsers(dest="action", required=True)
    p_add = actions.add_parser("add", help="upload a package directory (manifest.json + artifact) or a builtin")
    p_add.add_argument("path", nargs="?", default="", help="package directory")
    p_add.add_argument("--builtin", action="append", default=[], help="builtin package name, repeatable")
    p_add.add_argument("--activate", action="store_true", help="make the added version the active one")
    p_add.add_argument(
        "--activate-first",
        action="store_true",
        help="activate it when no version of the model was ever active (what `doctorai up` does for the builtins)",
    )
    p_list = actions.add_parser("list", help="registered versions and their status")
    p_list.add_argument("name", nargs="?", default="")
    for action, text in (("activate", "make VERSION the one new jobs use"), ("retire", "take VERSION out of use")):
        p = actions.add_parser(action, help=text)
        p.add_argument("name")
        p.add_argument("version")
    p_rollback = actions.add_parser("rollback", help="activate the version that was active before")
    p_rollback.add_argument("name")
