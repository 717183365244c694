"""The data flow: topics, event schemas, the outbox relay, routing and the local stack."""
