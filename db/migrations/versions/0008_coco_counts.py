"""Store masks as COCO compressed RLE strings (``annotation.counts``) instead of iMaterialist
run-length text (``annotation.rle``); key iMaterialist rows by their mask's string.

The same masks in about a sixth of the bytes: a full iMaterialist store shrinks from 1.6 GB
to about 0.3 GB, and an import writes that much less. Existing masks are converted in place.
An iMaterialist row's source key was a hash of its ImageId, ClassId and run-length text; it is
now a hash of its category, attribute ids and COCO string (:mod:`workbench.formats.records`),
recomputed here so that re-importing the same file still finds every row.

Revision ID: 0008
Revises: 0007
"""

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BATCH = 5000
_SELECT = (
    "SELECT annotation.id, annotation.{column}, image.height, image.width, annotation.image_id, "
    "annotation.source_key, category.source_id, dataset.format FROM annotation "
    "JOIN image ON image.id = annotation.image_id JOIN category ON category.id = annotation.category_id "
    "JOIN dataset ON dataset.id = annotation.dataset_id "
    "WHERE annotation.id > :last ORDER BY annotation.id LIMIT :n"
)
_ATTRIBUTES = (
    "SELECT annotation_attribute.annotation_id, attribute.source_id FROM annotation_attribute "
    "JOIN attribute ON attribute.id = annotation_attribute.attribute_id "
    "WHERE annotation_attribute.annotation_id BETWEEN :first AND :last"
)


def _batches(source: str):
    """The annotations, a batch at a time, each row with its attribute source ids."""
    connection = op.get_bind()
    last_id = 0
    while True:
        rows = connection.execute(sa.text(_SELECT.format(column=source)), {"last": last_id, "n": _BATCH}).all()
        if not rows:
            return
        attributes = defaultdict(list)
        for annotation_id, attribute in connection.execute(
            sa.text(_ATTRIBUTES), {"first": rows[0][0], "last": rows[-1][0]}
        ):
            attributes[annotation_id].append(attribute)
        yield [(*row, attributes[row[0]]) for row in rows]
        last_id = rows[-1][0]


def upgrade() -> None:
    from workbench.formats.records import class_key, source_key
    from workbench.rle import RLEError, parse_runs, runs_to_counts

    # Renamed, not added and dropped: on SQLite dropping a column copies the table, and
    # dropping the old copy would cascade to every annotation's attribute links.
    op.alter_column("annotation", "rle", new_column_name="counts", existing_type=sa.Text(), existing_nullable=False)
    connection = op.get_bind()
    keys = set()  # (image, key) given so far: an exact duplicate row keeps its old key
    for rows in _batches("counts"):
        updates = []
        for annotation_id, text, height, width, image_id, key, category, format_, attributes in rows:
            try:
                counts = runs_to_counts(parse_runs(text, height, width), height * width)
            except RLEError as exc:
                raise RuntimeError(f"annotation {annotation_id}: its stored mask is not valid: {exc}") from exc
            if format_ == "imat2019":
                new_key = source_key(class_key(category, attributes), counts)
                key = key if (image_id, new_key) in keys else new_key
            keys.add((image_id, key))
            updates.append({"id": annotation_id, "counts": counts, "key": key})
        connection.execute(sa.text("UPDATE annotation SET counts = :counts, source_key = :key WHERE id = :id"),
                           updates)


def downgrade() -> None:
    """Masks back to text; source keys stay as they are (a re-import of an iMaterialist file
    into the downgraded store adds its rows again)."""
    from workbench.rle import counts_to_runs, runs_to_text

    op.alter_column("annotation", "counts", new_column_name="rle", existing_type=sa.Text(), existing_nullable=False)
    connection = op.get_bind()
    for rows in _batches("rle"):
        connection.execute(
            sa.text("UPDATE annotation SET rle = :rle WHERE id = :id"),
            [{"id": row[0], "rle": runs_to_text(counts_to_runs(row[1], row[2], row[3]))} for row in rows],
        )
