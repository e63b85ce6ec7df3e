"""image.file_size holds byte counts past 2 GiB on PostgreSQL too (64-bit there, as SQLite's integers are)

Revision ID: 0019
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa


revision = "0019"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite's INTEGER is already 64-bit; rebuilding the image table there would gain nothing.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("image", "file_size", type_=sa.BigInteger(), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("image", "file_size", type_=sa.Integer(), existing_nullable=True)
