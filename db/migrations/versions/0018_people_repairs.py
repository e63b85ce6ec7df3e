"""People repairs: erased photos and curated masks of unlabelled people, apart from the dataset's own.

Revision ID: 0018
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "people_repair",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("photo_path", sa.Text(), nullable=True),
        sa.Column("curator", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
        sa.Column("removed_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_people_repair_dataset_id", "people_repair", ["dataset_id"], unique=False)
    op.create_index("ix_people_repair_image_id", "people_repair", ["image_id"], unique=False)
    op.create_table(
        "repair_annotation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repair_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("area", sa.Integer(), nullable=False),
        sa.Column("bbox_x", sa.Integer(), nullable=False),
        sa.Column("bbox_y", sa.Integer(), nullable=False),
        sa.Column("bbox_w", sa.Integer(), nullable=False),
        sa.Column("bbox_h", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["category_id"], ["category.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["repair_id"], ["people_repair.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_repair_annotation_repair_id", "repair_annotation", ["repair_id"], unique=False)
    op.create_index("ix_repair_annotation_image_id", "repair_annotation", ["image_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_repair_annotation_image_id", table_name="repair_annotation")
    op.drop_index("ix_repair_annotation_repair_id", table_name="repair_annotation")
    op.drop_table("repair_annotation")
    op.drop_index("ix_people_repair_image_id", table_name="people_repair")
    op.drop_index("ix_people_repair_dataset_id", table_name="people_repair")
    op.drop_table("people_repair")
