"""SQL tables (SQLAlchemy 2.0 declarative), one module per area; every change goes through an Alembic migration.

Callers import a table from the module that holds it. Importing any of them runs this first, which
imports every area, so `base.Base.metadata` (what Alembic migrates) always holds every table and
the foreign keys between areas (an inference job's study, a forward's destination) resolve.
"""

from storage.tables import access, audit, fhir, hl7, index, outbound, pipeline, processes  # noqa: F401  (registers every table)
