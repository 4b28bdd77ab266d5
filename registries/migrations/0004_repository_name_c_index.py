"""`_catalog` pages walk repositories by (upstream, name) in code-point order, the order of
Python's sort. SQLite's unique (upstream, name) index already has that order; on PostgreSQL
the catalog compares and sorts with the "C" collation, which the unique index (in the
database's collation) cannot serve, so this index does: a page then reads its rows, not every
repository."""

from django.db import migrations

INDEX = "registries_repository_name_c"


def create(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name("registries_repository")
        schema_editor.execute(
            f'CREATE INDEX {INDEX} ON {table} ("upstream_id", "name" COLLATE "C")'
        )


def drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("registries", "0003_tag_history_and_pins")]

    operations = [migrations.RunPython(create, drop)]
