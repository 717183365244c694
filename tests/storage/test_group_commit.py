"""Group commit: concurrent items share transactions, each gets its own outcome, failures reach every waiter."""

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from storage.db import make_engine, migrate, session_scope
from storage.errors import StorageUnavailable
from storage.group_commit import GroupCommit
from storage.tables.access import DicomPeer


def _engine(tmp_path: Path) -> Engine:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    return make_engine(url)


def test_items_waiting_together_share_a_transaction_and_keep_their_own_outcomes(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    batches: list[list[str]] = []

    def write(session: Session, titles: Sequence[str]) -> list[str | Exception]:
        batches.append(list(titles))
        time.sleep(0.2)  # while the first batch writes, the others queue up behind it
        outcomes: list[str | Exception] = []
        for title in titles:
            if title == "BAD":
                outcomes.append(ValueError("refused"))
                continue
            session.execute(text("INSERT INTO dicom_peers (ae_title, host, updated_at) VALUES (:t, '', '2026-01-01')"), {"t": title})
            outcomes.append(title.lower())
        return outcomes

    group: GroupCommit[str, str] = GroupCommit(engine, write)
    results: dict[str, str | Exception] = {}

    def submit(title: str) -> None:
        try:
            results[title] = group.commit(title)
        except ValueError as exc:
            results[title] = exc

    threads = [threading.Thread(target=submit, args=(t,)) for t in ("A", "B", "BAD", "C", "D")]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(10)
    assert {k: v for k, v in results.items() if not isinstance(v, Exception)} == {"A": "a", "B": "b", "C": "c", "D": "d"}
    assert isinstance(results["BAD"], ValueError)
    assert len(batches) < 5 and sorted(t for b in batches for t in b) == ["A", "B", "BAD", "C", "D"]
    with session_scope(engine) as s:
        assert sorted(s.scalars(select(DicomPeer.ae_title))) == ["A", "B", "C", "D"]
    engine.dispose()


def test_a_batch_that_fails_fails_every_item_in_it(tmp_path: Path) -> None:
    engine = _engine(tmp_path)

    def write(session: Session, items: Sequence[int]) -> list[int | Exception]:
        raise RuntimeError("a bug outside any one item")

    group: GroupCommit[int, int] = GroupCommit(engine, write)
    with pytest.raises(RuntimeError):
        group.commit(1)
    engine.dispose()
    dead = make_engine(f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}")  # a directory that does not exist
    down: GroupCommit[int, int] = GroupCommit(dead, lambda session, items: [session.execute(text("SELECT 1")).scalar_one() for _ in items])
    with pytest.raises(StorageUnavailable):
        down.commit(1)
