"""Predicted masks: their sources (model, checkpoint, scheme) and one row per (image, class),
in tables of their own so that queries of real annotations never see them.

Revision ID: 0011
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_source",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=False),
        sa.Column("scheme", sa.String(length=200), nullable=False),
        sa.Column("scheme_version", sa.Integer(), nullable=False),
        sa.Column("legend", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "model", "checkpoint", "scheme", "scheme_version"),
    )
    op.create_index("ix_prediction_source_dataset_id", "prediction_source", ["dataset_id"], unique=False)
    op.create_table(
        "predicted_annotation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("area", sa.Integer(), nullable=False),
        sa.Column("bbox_x", sa.Integer(), nullable=False),
        sa.Column("bbox_y", sa.Integer(), nullable=False),
        sa.Column("bbox_w", sa.Integer(), nullable=False),
        sa.Column("bbox_h", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_id"], ["prediction_source.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_id", "image_id", "value"),
    )
    op.create_index("ix_predicted_annotation_image_id", "predicted_annotation", ["image_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_predicted_annotation_image_id", table_name="predicted_annotation")
    op.drop_table("predicted_annotation")
    op.drop_index("ix_prediction_source_dataset_id", table_name="prediction_source")
    op.drop_table("prediction_source")
