"""Record the dataset a mixing recipe version was saved for (``mix_recipe.dataset_id``).

Recipes stay usable with any dataset; the column lets the Export page start from the latest
recipe saved for the dataset being exported. Older versions keep NULL (saved for no dataset).

Revision ID: 0013
Revises: 0009 (and needs 0004, which makes mix_recipe)
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0009"
branch_labels = None
depends_on = "0004"  # mix_recipe is made on the captions branch


def upgrade() -> None:
    with op.batch_alter_table("mix_recipe", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_mix_recipe_dataset_id", "dataset", ["dataset_id"], ["id"],
                                    ondelete="SET NULL")
        batch_op.create_index("ix_mix_recipe_dataset_id", ["dataset_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("mix_recipe", schema=None) as batch_op:
        batch_op.drop_index("ix_mix_recipe_dataset_id")
        batch_op.drop_constraint("fk_mix_recipe_dataset_id", type_="foreignkey")
        batch_op.drop_column("dataset_id")
