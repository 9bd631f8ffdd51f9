from celery import shared_task

from . import services


@shared_task(name="artifacts.retention_purge", acks_late=True)
def retention_purge() -> dict:
    """Purge expired builds' artifacts and unreferenced blobs. Safe to run twice or concurrently:
    every deletion re-checks its condition under a row lock."""
    result = services.retention_purge()
    return {
        "artifacts": result.artifacts,
        "blobs": result.blobs,
        "staging": result.staging_files,
        "uploads_aborted": result.uploads_aborted,
        "orphans_deleted": result.orphans_deleted,
        "unknown_objects": result.unknown_objects,
        "usage_drifts": [str(drift) for drift in result.usage_drifts],
    }
