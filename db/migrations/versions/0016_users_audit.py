"""Users who sign in (name, password hash, role) and the dataset of every audit row.

Revision ID: 0016
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = "0016"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=100), nullable=True),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset", sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_log_dataset"), ["dataset"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_dataset"))
        batch_op.drop_column("dataset")
    op.drop_table("user")
