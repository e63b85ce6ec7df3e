"""Controllability evaluations of ControlNet checkpoints (mIoU, per-class IoU, CLIP score, worst cases).

Revision ID: 0014
Revises: 0009
Create Date: 2026-12-03 15:20:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('evaluation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('run_dir', sa.Text(), nullable=True),
    sa.Column('controlnet', sa.Text(), nullable=False),
    sa.Column('checkpoint_step', sa.Integer(), nullable=True),
    sa.Column('base_model', sa.Text(), nullable=False),
    sa.Column('export_manifest_sha256', sa.String(length=64), nullable=True),
    sa.Column('scheme', sa.String(length=100), nullable=True),
    sa.Column('segmenter', sa.Text(), nullable=False),
    sa.Column('split', sa.String(length=40), nullable=False),
    sa.Column('masks', sa.Integer(), nullable=False),
    sa.Column('images', sa.Integer(), nullable=False),
    sa.Column('miou', sa.Float(), nullable=True),
    sa.Column('miou_foreground', sa.Float(), nullable=True),
    sa.Column('pixel_accuracy', sa.Float(), nullable=True),
    sa.Column('iou', sa.JSON(), nullable=False),
    sa.Column('clip_score', sa.Float(), nullable=True),
    sa.Column('ceiling_miou', sa.Float(), nullable=True),
    sa.Column('ceiling', sa.JSON(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('worst_cases', sa.JSON(), nullable=False),
    sa.Column('notes', sa.JSON(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('evaluation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluation_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluation_run_dir'), ['run_dir'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('evaluation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluation_run_dir'))
        batch_op.drop_index(batch_op.f('ix_evaluation_job_id'))

    op.drop_table('evaluation')
