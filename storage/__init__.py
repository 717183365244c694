"""Durable storage: object store for bytes, SQL database for the index, records and the outbox."""
