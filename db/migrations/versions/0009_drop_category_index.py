"""Drop ix_annotation_dataset_category: an import paid for it on every row, few reads used it.

Rows arrive image by image, so this index took them in one place per category: every batch
rewrote a page per category (a quarter of a full iMaterialist import's time). Look-ups of a
dataset's annotations of one category use the explore index instead (a few milliseconds on
331,213 annotations).

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_annotation_dataset_category", table_name="annotation")


def downgrade() -> None:
    op.create_index("ix_annotation_dataset_category", "annotation", ["dataset_id", "category_id"], unique=False)
