from django.core.management.base import BaseCommand
from django.db import transaction

from webhooks import crypto
from webhooks.models import Subscription

ENCRYPTED = [
    "secret_encrypted",
    "basic_auth_password_encrypted",
    "sigv4_secret_encrypted",
]


class Command(BaseCommand):
    help = (
        "Re-encrypt every subscription's secrets under the first WEBHOOK_ENCRYPTION_KEYS key "
        "(after prepending a new key; then the old one can be dropped)."
    )

    def handle(self, *args, **options):
        count = 0
        with transaction.atomic():
            rows = Subscription.objects.select_for_update().only(
                "pk", "previous_secrets", *ENCRYPTED
            )
            for subscription in rows:
                for field in ENCRYPTED:
                    setattr(subscription, field, crypto.reencrypt(getattr(subscription, field)))
                subscription.previous_secrets = [
                    {**entry, "secret_encrypted": crypto.reencrypt(entry["secret_encrypted"])}
                    for entry in subscription.previous_secrets
                ]
                subscription.save(update_fields=["previous_secrets", *ENCRYPTED])
                count += 1
        self.stdout.write(f"Re-encrypted the secrets of {count} subscription(s).")
