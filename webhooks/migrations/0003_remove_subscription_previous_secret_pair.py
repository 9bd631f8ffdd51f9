from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0002_subscription_previous_secrets"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="subscription",
            name="previous_secret_encrypted",
        ),
        migrations.RemoveField(
            model_name="subscription",
            name="previous_secret_expires_at",
        ),
    ]
