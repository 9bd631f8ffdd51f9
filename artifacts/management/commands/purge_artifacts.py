from django.core.management.base import BaseCommand

from artifacts import services


class Command(BaseCommand):
    help = (
        "Delete artifacts of builds past their project's retention, then blobs no artifact "
        "references any more (the same purge the periodic task runs); then recompute the builds' "
        "and projects' usage counters and report any that had drifted."
    )

    def handle(self, *args, **options):
        result = services.retention_purge()
        self.stdout.write(
            f"Purged {result.artifacts} artifact(s), {result.blobs} blob(s), "
            f"{result.staging_files} abandoned staging file(s)."
        )
        for drift in result.usage_drifts:
            self.stdout.write(f"Usage counter repaired: {drift}")
        if not result.usage_drifts:
            self.stdout.write("Usage counters: no usage drift.")
