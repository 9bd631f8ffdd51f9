from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from builds.signals import build_finished

        from .handlers import on_build_finished

        build_finished.connect(on_build_finished, dispatch_uid="webhooks.on_build_finished")
