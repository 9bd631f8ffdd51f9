from django.db import migrations
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce


def counters_from_rows(apps, schema_editor):
    """Start the builds' and projects' usage counters from the artifacts already stored."""
    Artifact = apps.get_model("artifacts", "Artifact")
    Build = apps.get_model("builds", "Build")
    Project = apps.get_model("builds", "Project")
    for owner, field in ((Build, "build_id"), (Project, "build__project_id")):
        totals = (
            Artifact.objects.values(field)
            .order_by()
            .annotate(files=Count("pk"), size=Coalesce(Sum("blob__size"), 0))
        )
        for row in totals.iterator():
            owner.objects.filter(pk=row[field]).update(
                used_files=row["files"], used_bytes=row["size"]
            )


class Migration(migrations.Migration):
    dependencies = [
        ("artifacts", "0004_share"),
        ("builds", "0003_usage_counters"),
    ]

    operations = [migrations.RunPython(counters_from_rows, migrations.RunPython.noop)]
