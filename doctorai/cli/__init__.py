"""The `doctorai` command, one module per command group: `up`/`init` start the local stack or prepare
real services (up.py), `token` and `clients` (api.py), `peers`, `models`, `studies`,
`destinations`/`deliveries`/`hl7` (hl7.py), `audit` and `users` (people who sign in to the console).

This is a composition root like a `__main__`: it may reach into every package. Each command imports
what it needs when it runs, so `doctorai token` does not load the inference frameworks.
"""

import argparse

from doctorai.cli import api, audit, hl7, models, peers, studies, up, users
from integration.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand."""
    parser = argparse.ArgumentParser(prog="doctorai", description="DoctorAI integration engine")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (up, audit, hl7, api, peers, models, studies, users):
        group.add_parser(sub)
    args = parser.parse_args(argv)
    setup_logging()
    return int(args.func(args))
