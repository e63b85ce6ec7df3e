"""The model registry: models a user added, and the latest check of every model.

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("added", sa.Boolean(), nullable=False),
        sa.Column("hub_id", sa.String(length=300), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("tiny", sa.Boolean(), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.Column("check_state", sa.String(length=20), nullable=True),
        sa.Column("check_reason", sa.Text(), nullable=True),
        sa.Column("check_fix", sa.Text(), nullable=True),
        sa.Column("check_location", sa.Text(), nullable=True),
        sa.Column("check_seconds", sa.Float(), nullable=True),
        sa.Column("checked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("model_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_entry_kind"), ["kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_entry_kind"))
    op.drop_table("model_entry")
