from django.shortcuts import get_object_or_404

from tokens.access import visible_build

from .models import Build


def build_get_for_key(*, key, build_id: int | str) -> Build:
    """The build ``build_id`` (an int, or the digits a URL captured) if ``key`` reaches it, else
    404 (also when it exists elsewhere).

    A build-bound key was loaded with its build and project (one query, at authentication), so
    its own build costs no further query: this runs on every upload and download.
    """
    build_id = int(build_id)
    build = getattr(key, "build", None)
    if build is not None and build.pk == build_id and key.build_id == build_id:
        return build
    return get_object_or_404(visible_build(Build.objects.select_related("project"), key, build_id))
