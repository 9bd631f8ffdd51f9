"""Small factories: the service functions themselves, so tests build state the way the app does."""

import itertools

from builds import services as build_services
from builds.models import Project
from tokens import services as token_services
from tokens.scopes import Scope

_seq = itertools.count(1)


def make_project(*, slug: str | None = None, **fields) -> Project:
    project = build_services.project_create(slug=slug or f"proj-{next(_seq)}")
    if fields:
        Project.objects.filter(pk=project.pk).update(**fields)
        project.refresh_from_db()
    return project


def make_project_key(project: Project, scopes=(Scope.BUILDS_CREATE,)) -> str:
    return token_services.key_mint_project(project=project, scopes=scopes)[1]


def make_build(project: Project, **fields) -> build_services.CreatedBuild:
    return build_services.build_create(project=project, **fields)
