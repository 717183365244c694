"""The audit trail: one append-only, hash-chained record per hop and per access."""
