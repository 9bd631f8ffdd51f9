from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from tokens import services as token_services
from tokens.models import ApiKey

from .errors import BuildAlreadyFinished
from .models import Build, Project
from .signals import build_finished


@dataclass(frozen=True)
class CreatedBuild:
    build: Build
    key: ApiKey
    token: str
    deploy_key: ApiKey | None = None
    deploy_token: str | None = None


@transaction.atomic
def project_create(*, slug: str, name: str = "", deploy_tokens: bool = False) -> Project:
    return Project.objects.create(slug=slug, name=name or slug, deploy_tokens_enabled=deploy_tokens)


@transaction.atomic
def build_create(
    *, project: Project, ref: str = "", commit: str = "", trusted: bool = True, metadata=None
) -> CreatedBuild:
    """Start a build and mint its own key.

    A trusted build of a project that opted in also gets the current deploy token to pass on.
    An untrusted one (a fork's pull request) never does: the deploy token reads every build of
    the project, which is exactly what a fork's job must not reach.
    """
    # The counter row update serialises concurrent creates in one project.
    Project.objects.filter(pk=project.pk).update(build_counter=F("build_counter") + 1)
    number = Project.objects.values_list("build_counter", flat=True).get(pk=project.pk)
    build = Build.objects.create(
        project=project,
        number=number,
        ref=ref,
        commit=commit,
        trusted=trusted,
        metadata=metadata or {},
    )
    key, token = token_services.key_mint_for_build(build=build)
    deploy = token_services.deploy_token_current(project=project) if trusted else None
    deploy_key, deploy_token = deploy if deploy else (None, None)
    return CreatedBuild(build, key, token, deploy_key, deploy_token)


@transaction.atomic
def build_finish(*, build: Build, state: Build.State, key: ApiKey | None = None) -> Build:
    """Finish a running build. From this commit on, its keys are read-only (effective scopes
    are computed from the state), and subscribers' deliveries are written in this transaction.

    ``key`` is the credential that asked (None: the system); listeners decide from it, e.g.
    a finish by a derived key notifies no downstream."""
    build = Build.objects.select_for_update().get(pk=build.pk)
    if not build.is_running:
        raise BuildAlreadyFinished(f"Build #{build.number} already finished ({build.state}).")
    build.state = state
    build.finished_at = timezone.now()
    build.save(update_fields=["state", "finished_at"])
    build_finished.send(sender=Build, build=build, key=key)
    return build
