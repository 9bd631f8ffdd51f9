"""The database keeps the usage counters: a trigger on the artifact table adds each inserted
artifact to its build's and project's counters and takes each deleted one off, whichever path
wrote or removed it (the upload, a batch, retention, the ORM's cascade from a build or project).
"""

from django.db import migrations

# Statement-level with transition tables: one UPDATE per build and per project however many
# rows a statement inserts or deletes (a row-level trigger updating the same build row 10^5
# times in one transaction would leave PostgreSQL walking an ever longer chain of row versions).
POSTGRESQL = [
    """
    CREATE FUNCTION artifacts_usage_count() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        sign integer := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
    BEGIN
        WITH per_build AS (
            SELECT c.build_id, sign * SUM(COALESCE(bl.size, 0)) AS bytes, sign * COUNT(*) AS files
            FROM changed c LEFT JOIN artifacts_blob bl ON bl.sha256 = c.blob_id
            GROUP BY c.build_id
        ), builds AS (
            UPDATE builds_build b
            SET used_bytes = b.used_bytes + d.bytes, used_files = b.used_files + d.files
            FROM per_build d WHERE b.id = d.build_id
            RETURNING b.project_id, d.bytes, d.files
        )
        UPDATE builds_project p
        SET used_bytes = p.used_bytes + x.bytes, used_files = p.used_files + x.files
        FROM (SELECT project_id, SUM(bytes) AS bytes, SUM(files) AS files
              FROM builds GROUP BY project_id) x
        WHERE p.id = x.project_id;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER artifacts_usage_insert AFTER INSERT ON artifacts_artifact
        REFERENCING NEW TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION artifacts_usage_count()
    """,
    """
    CREATE TRIGGER artifacts_usage_delete AFTER DELETE ON artifacts_artifact
        REFERENCING OLD TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION artifacts_usage_count()
    """,
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER IF EXISTS artifacts_usage_insert ON artifacts_artifact",
    "DROP TRIGGER IF EXISTS artifacts_usage_delete ON artifacts_artifact",
    "DROP FUNCTION IF EXISTS artifacts_usage_count()",
]

# SQLite has row-level triggers only; it updates a row in place, so they stay cheap.
SQLITE = [
    """
    CREATE TRIGGER artifacts_usage_insert AFTER INSERT ON artifacts_artifact BEGIN
        UPDATE builds_build SET
            used_bytes = used_bytes
                + COALESCE((SELECT size FROM artifacts_blob WHERE sha256 = NEW.blob_id), 0),
            used_files = used_files + 1
            WHERE id = NEW.build_id;
        UPDATE builds_project SET
            used_bytes = used_bytes
                + COALESCE((SELECT size FROM artifacts_blob WHERE sha256 = NEW.blob_id), 0),
            used_files = used_files + 1
            WHERE id = (SELECT project_id FROM builds_build WHERE id = NEW.build_id);
    END
    """,
    """
    CREATE TRIGGER artifacts_usage_delete AFTER DELETE ON artifacts_artifact BEGIN
        UPDATE builds_build SET
            used_bytes = used_bytes
                - COALESCE((SELECT size FROM artifacts_blob WHERE sha256 = OLD.blob_id), 0),
            used_files = used_files - 1
            WHERE id = OLD.build_id;
        UPDATE builds_project SET
            used_bytes = used_bytes
                - COALESCE((SELECT size FROM artifacts_blob WHERE sha256 = OLD.blob_id), 0),
            used_files = used_files - 1
            WHERE id = (SELECT project_id FROM builds_build WHERE id = OLD.build_id);
    END
    """,
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS artifacts_usage_insert",
    "DROP TRIGGER IF EXISTS artifacts_usage_delete",
]


def _run(statements: dict):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in statements:
            raise RuntimeError(f"usage counters need PostgreSQL or SQLite, not {vendor}")
        for sql in statements[vendor]:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("artifacts", "0005_usage_counters_from_rows")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRESQL, "sqlite": SQLITE}),
            _run({"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE}),
        )
    ]
