from django.core.management.base import BaseCommand

from artifacts import services


class Command(BaseCommand):
    help = (
        "Delete artifacts of builds past their project's retention, then blobs no artifact "
        "references any more, then reconcile the storage with the database and the usage "
        "counters with the artifacts (the same purge the periodic task runs)."
    )

    def handle(self, *args, **options):
        result = services.retention_purge()
        self.stdout.write(
            f"Purged {result.artifacts} artifact(s), {result.blobs} blob(s), "
            f"{result.staging_files} abandoned staging file(s); aborted "
            f"{result.uploads_aborted} incomplete upload(s), deleted {result.orphans_deleted} "
            f"orphan object(s); {result.unknown_objects} object(s) unknown to the database."
        )
        for drift in result.usage_drifts:
            self.stdout.write(f"Usage counter repaired: {drift}")
        if not result.usage_drifts:
            self.stdout.write("Usage counters: no usage drift.")
