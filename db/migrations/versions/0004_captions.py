"""Captions: captions per image and source, their versions, Kosmos-2 phrases, mixing recipes.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-25 09:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('caption',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=40), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('settings_key', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('curator', sa.String(length=200), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.Column('run', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('image_id', 'source', 'settings_key')
    )
    with op.batch_alter_table('caption', schema=None) as batch_op:
        batch_op.create_index('ix_caption_dataset_source', ['dataset_id', 'source'], unique=False)
        batch_op.create_index(batch_op.f('ix_caption_image_id'), ['image_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_caption_status'), ['status'], unique=False)

    op.create_table('caption_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('caption_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('curator', sa.String(length=200), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['caption_id'], ['caption.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('caption_id', 'version')
    )
    with op.batch_alter_table('caption_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_caption_version_caption_id'), ['caption_id'], unique=False)

    op.create_table('caption_phrase',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('caption_id', sa.Integer(), nullable=False),
    sa.Column('phrase', sa.Text(), nullable=False),
    sa.Column('start', sa.Integer(), nullable=False),
    sa.Column('end', sa.Integer(), nullable=False),
    sa.Column('x0', sa.Float(), nullable=False),
    sa.Column('y0', sa.Float(), nullable=False),
    sa.Column('x1', sa.Float(), nullable=False),
    sa.Column('y1', sa.Float(), nullable=False),
    sa.Column('garment', sa.String(length=200), nullable=True),
    sa.Column('overlap', sa.Float(), nullable=True),
    sa.Column('agrees', sa.Boolean(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['caption_id'], ['caption.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('caption_phrase', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_caption_phrase_caption_id'), ['caption_id'], unique=False)

    op.create_table('mix_recipe',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('curator', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'version')
    )


def downgrade() -> None:
    op.drop_table('mix_recipe')
    with op.batch_alter_table('caption_phrase', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_caption_phrase_caption_id'))
    op.drop_table('caption_phrase')
    with op.batch_alter_table('caption_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_caption_version_caption_id'))
    op.drop_table('caption_version')
    with op.batch_alter_table('caption', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_caption_status'))
        batch_op.drop_index(batch_op.f('ix_caption_image_id'))
        batch_op.drop_index('ix_caption_dataset_source')
    op.drop_table('caption')
