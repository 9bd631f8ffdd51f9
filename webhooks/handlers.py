"""Listens to builds' domain events (builds/ never imports webhooks/)."""

from tokens.models import ApiKey

from .services import deliveries_create_for_build


def on_build_finished(sender, *, build, key=None, **kwargs) -> None:
    """Write the outbox rows in the finishing transaction.

    Untrusted builds (forks' pull requests) notify nobody unless the project opted in; and
    nothing a derived key does (a downstream's status key, a job's narrowed key) notifies
    anyone, so a downstream can never start a loop of builds and webhooks."""
    if key is not None and key.kind == ApiKey.Kind.DERIVED:
        return
    if not build.trusted and not build.project.untrusted_webhooks:
        return
    deliveries_create_for_build(build=build)
