"""A destination as its sending task sees it: a frozen snapshot of the row, so a changed row is a new target."""

from dataclasses import dataclass

from storage.tables.outbound import Destination


@dataclass(frozen=True)
class Target:
    """One destination's settings; hashable (options as sorted pairs), so the supervisor can compare rows."""

    id: int
    name: str
    kind: str
    host: str
    port: int
    tls: bool
    options: tuple[tuple[str, str], ...]

    def option(self, key: str) -> str:
        """One of the kind's options (ae_title, base_url, url, ca_file ...), "" when not set."""
        return dict(self.options).get(key, "")


def target_of(row: Destination) -> Target:
    """The destination row as a target."""
    options = tuple(sorted((row.options or {}).items()))
    return Target(row.id, row.name, row.kind, row.host, row.port, row.tls, options)
