"""Explore: a covering index for the EDA page's annotation frame.

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-25 08:50:00.000000
"""

from alembic import op


revision = '0005'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('annotation', schema=None) as batch_op:
        batch_op.create_index(
            'ix_annotation_explore', ['dataset_id', 'image_id', 'category_id', 'area'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('annotation', schema=None) as batch_op:
        batch_op.drop_index('ix_annotation_explore')
