"""Generated images with their provenance (base model, ControlNet checkpoint, export, seed, settings).

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-03 14:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('generation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('run', sa.String(length=40), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.Column('mask_path', sa.Text(), nullable=False),
    sa.Column('mask_sha256', sa.String(length=64), nullable=False),
    sa.Column('base_model', sa.Text(), nullable=False),
    sa.Column('controlnet', sa.Text(), nullable=False),
    sa.Column('checkpoint_step', sa.Integer(), nullable=True),
    sa.Column('export_manifest_sha256', sa.String(length=64), nullable=True),
    sa.Column('scheme', sa.String(length=100), nullable=True),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('negative_prompt', sa.Text(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('mask_source', sa.JSON(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('generation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_generation_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_generation_run'), ['run'], unique=False)
        batch_op.create_index(batch_op.f('ix_generation_mask_sha256'), ['mask_sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('generation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_generation_mask_sha256'))
        batch_op.drop_index(batch_op.f('ix_generation_run'))
        batch_op.drop_index(batch_op.f('ix_generation_job_id'))

    op.drop_table('generation')
