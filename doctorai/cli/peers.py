"""`doctorai peers`: the DICOM peers allowed to send (calling AE titles), each with its own settings,
what it may query or retrieve, and where it listens."""

import argparse
import sys

from doctorai.cli.database import database


def peers(args: argparse.Namespace) -> int:
    """List, add (or change) and remove DICOM peers: calling AE titles with their own settings."""
    from dataclasses import asdict

    from storage.db import session_scope
    from storage.peers import Peer, all_peers, delete_peer, save_peer

    with database() as engine, session_scope(engine) as session:
        if args.action == "add":
            save_peer(
                session,
                Peer(
                    ae_title=args.ae_title,
                    host=args.host,
                    quiet_period_seconds=args.quiet_period,
                    max_associations=args.max_associations,
                    max_pdu=args.max_pdu,
                    dimse_timeout=args.dimse_timeout,
                    network_timeout=args.network_timeout,
                    duplicate_policy=args.duplicate_policy,
                    port=args.port,
                    may_find=args.find,
                    may_move=args.move,
                    may_get=args.get,
                ),
            )
            print(f"peer {args.ae_title} saved")
        elif args.action == "remove":
            if not delete_peer(session, ae_title=args.ae_title):
                print(f"doctorai peers remove: no peer {args.ae_title}", file=sys.stderr)
                return 1
            print(f"peer {args.ae_title} removed")
        else:
            for peer in all_peers(session):
                print(" ".join(f"{k}={v}" for k, v in asdict(peer).items() if v not in (None, "", False)))
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`doctorai peers list|add|remove`."""
    p_peers = sub.add_parser("peers", help="DICOM peers allowed to send, with per-peer settings")
    peer_actions = p_peers.add_subparsers(dest="action", required=True)
    peer_actions.add_parser("list", help="print every peer")
    p_remove = peer_actions.add_parser("remove", help="remove a peer")
    p_remove.add_argument("ae_title")
    p_add = peer_actions.add_parser("add", help="add a peer, or replace its settings")
    p_add.add_argument("ae_title")
    p_add.add_argument("--host", default="", help="the only host or address it may call from")
    p_add.add_argument("--quiet-period", type=float, default=None, help="seconds; default DOCTORAI_QUIET_PERIOD_SECONDS")
    p_add.add_argument("--max-associations", type=int, default=None)
    p_add.add_argument("--max-pdu", type=int, default=None)
    p_add.add_argument("--dimse-timeout", type=float, default=None)
    p_add.add_argument("--network-timeout", type=float, default=None)
    p_add.add_argument("--duplicate-policy", choices=["keep-first", "keep-last", "reject"], default=None)
    p_add.add_argument("--port", type=int, default=None, help="where its SCP listens: a C-MOVE destination, commitment reports")
    p_add.add_argument("--find", action="store_true", help="may query (C-FIND)")
    p_add.add_argument("--move", action="store_true", help="may retrieve with C-MOVE")
    p_add.add_argument("--get", action="store_true", help="may retrieve with C-GET")
    p_peers.set_defaults(func=peers)
