from django.apps import AppConfig
from django.db.models.signals import pre_delete


class ArtifactsConfig(AppConfig):
    name = "artifacts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from builds.models import Build

        from .usage import build_deleted_release

        pre_delete.connect(build_deleted_release, sender=Build, dispatch_uid="artifacts.usage")
