"""model versions whose artifact is a legacy format (Keras HDF5, TorchScript) run only when an admin allows it (issue 18)

Revision ID: 0905
Revises: 0902
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0905"
down_revision: str | None = "0904"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Versions registered before start refused as well: an uploaded .h5 or TorchScript package
    # runs only once an admin allowed it. The builtin packages are our own code: `doctorai up`
    # registers them again with `models add --builtin`, which allows them (integration.models.packages).
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("allow_legacy_format", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("allow_legacy_format")
