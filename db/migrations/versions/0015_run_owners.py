"""Record the process that owns each import, export and job (pid, create time, host), so a run
whose process died is found and shown as failed instead of "running" forever.

Revision ID: 0015
Revises: 0009 (and needs 0002 for job, 0006 for export)
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0009"
branch_labels = None
depends_on = ("0002", "0006")


def upgrade() -> None:
    with op.batch_alter_table("import_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pid_started", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("export", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pid_started", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("host")
    with op.batch_alter_table("export", schema=None) as batch_op:
        batch_op.drop_column("host")
        batch_op.drop_column("pid_started")
    with op.batch_alter_table("import_run", schema=None) as batch_op:
        batch_op.drop_column("error")
        batch_op.drop_column("host")
        batch_op.drop_column("pid_started")
        batch_op.drop_column("pid")
