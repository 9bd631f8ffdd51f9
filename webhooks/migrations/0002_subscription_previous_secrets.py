"""Superseded signing secrets: from one (previous_secret_encrypted, previous_secret_expires_at)
pair to a list, so each keeps signing until its own grace ends (0003 drops the pair).

Reversing keeps the newest superseded secret only: all the old pair can hold."""

from datetime import UTC, datetime

from django.db import migrations, models


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def pair_into_list(apps, schema_editor):
    Subscription = apps.get_model("webhooks", "Subscription")
    rows = Subscription.objects.exclude(previous_secret_encrypted="").filter(
        previous_secret_expires_at__isnull=False
    )
    for row in rows.only("pk", "previous_secret_encrypted", "previous_secret_expires_at"):
        # Still encrypted as it was: the ciphertext moves, it is never decrypted here.
        entry = {
            "secret_encrypted": row.previous_secret_encrypted,
            "expires_at": _iso(row.previous_secret_expires_at),
        }
        Subscription.objects.filter(pk=row.pk).update(previous_secrets=[entry])


def newest_into_pair(apps, schema_editor):
    Subscription = apps.get_model("webhooks", "Subscription")
    for row in Subscription.objects.only("pk", "previous_secrets"):
        if not row.previous_secrets:
            continue
        newest = row.previous_secrets[0]
        Subscription.objects.filter(pk=row.pk).update(
            previous_secret_encrypted=newest["secret_encrypted"],
            previous_secret_expires_at=datetime.fromisoformat(newest["expires_at"]),
        )


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="subscription",
            name="previous_secrets",
            field=models.JSONField(
                blank=True,
                default=list,
                editable=False,
                help_text='Superseded signing secrets that still sign until their own grace ends, newest first: [{"secret_encrypted": ..., "expires_at": ISO 8601}], at most WEBHOOK_SECRET_PREVIOUS_MAX (webhooks/services.py).',
            ),
        ),
        migrations.RunPython(pair_into_list, newest_into_pair),
    ]
