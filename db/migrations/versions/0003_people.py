"""People: detector scans, person proposals, the review queue's flags and every decision.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-25 09:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('people_flag',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('decision', sa.String(length=20), nullable=True),
    sa.Column('regions', sa.JSON(), nullable=False),
    sa.Column('curator', sa.String(length=200), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('conflict', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('claimed_by', sa.String(length=200), nullable=True),
    sa.Column('claim_expires_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('image_id')
    )
    with op.batch_alter_table('people_flag', schema=None) as batch_op:
        batch_op.create_index('ix_people_flag_queue', ['dataset_id', 'status', 'score'], unique=False)

    op.create_table('people_scan',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('detector', sa.String(length=40), nullable=False),
    sa.Column('settings_key', sa.String(length=64), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('proposals', sa.Integer(), nullable=False),
    sa.Column('labelled_people', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('image_id', 'detector', 'settings_key')
    )
    with op.batch_alter_table('people_scan', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_people_scan_dataset_id'), ['dataset_id'], unique=False)

    op.create_table('people_decision',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('curator', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('decision', sa.String(length=20), nullable=True),
    sa.Column('regions', sa.JSON(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('seen_version', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('before', sa.JSON(), nullable=False),
    sa.Column('after', sa.JSON(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('undone_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['flag_id'], ['people_flag.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('people_decision', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_people_decision_curator'), ['curator'], unique=False)
        batch_op.create_index(batch_op.f('ix_people_decision_flag_id'), ['flag_id'], unique=False)

    op.create_table('person_proposal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('detector', sa.String(length=40), nullable=False),
    sa.Column('settings_key', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('box_x', sa.Float(), nullable=False),
    sa.Column('box_y', sa.Float(), nullable=False),
    sa.Column('box_w', sa.Float(), nullable=False),
    sa.Column('box_h', sa.Float(), nullable=False),
    sa.Column('mask_rle', sa.Text(), nullable=True),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('coverage', sa.Float(), nullable=True),
    sa.Column('unlabelled_score', sa.Float(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['scan_id'], ['people_scan.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('person_proposal', schema=None) as batch_op:
        batch_op.create_index('ix_person_proposal_image_detector', ['image_id', 'detector'], unique=False)
        batch_op.create_index(batch_op.f('ix_person_proposal_scan_id'), ['scan_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('person_proposal', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_person_proposal_scan_id'))
        batch_op.drop_index('ix_person_proposal_image_detector')

    op.drop_table('person_proposal')
    with op.batch_alter_table('people_decision', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_people_decision_flag_id'))
        batch_op.drop_index(batch_op.f('ix_people_decision_curator'))

    op.drop_table('people_decision')
    with op.batch_alter_table('people_scan', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_people_scan_dataset_id'))

    op.drop_table('people_scan')
    with op.batch_alter_table('people_flag', schema=None) as batch_op:
        batch_op.drop_index('ix_people_flag_queue')

    op.drop_table('people_flag')
