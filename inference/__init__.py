"""Inference workers: model packages (manifest + artifact), preprocessing, adapters, the Kafka worker."""
