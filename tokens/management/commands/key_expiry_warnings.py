from django.core.management.base import BaseCommand

from tokens.services import key_expiry_warn


class Command(BaseCommand):
    help = (
        "List deploy and project keys expiring within the warning thresholds "
        "(KEY_EXPIRY_WARNING_DAYS) and audit each once per threshold."
    )

    def handle(self, *args, **options):
        warnings = key_expiry_warn()
        if not warnings:
            self.stdout.write("No key expires within the warning thresholds.")
            return
        for warning in warnings:
            key = warning.key
            self.stdout.write(
                f"{'NEW ' if warning.new else '    '}key {key.pk} ({key.kind}, project "
                f"{key.project.slug}) expires at {key.expires_at.isoformat()} "
                f"(within {warning.threshold_days} days)"
            )
