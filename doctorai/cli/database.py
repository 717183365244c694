"""The engine's database, opened for one command and closed when it is done."""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from storage.config import get_settings
from storage.db import make_engine


@contextmanager
def database() -> Iterator[Engine]:
    """An engine on the database the DOCTORAI_* settings name, disposed on the way out."""
    engine = make_engine(get_settings().resolved_database_url())
    try:
        yield engine
    finally:
        engine.dispose()
