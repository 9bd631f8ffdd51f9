from django.http import Http404
from django.shortcuts import get_object_or_404

from tokens.access import visible_build

from .models import Build


def build_get_for_key(*, key, build_id: int | str, with_totals: bool = False) -> Build:
    """The build ``build_id`` (an int, or the digits a URL captured) if ``key`` reaches it, else
    404 (also when it exists elsewhere).

    A build-bound key's build was loaded with the key and its project (authentication's one
    round trip): it is answered from there, without a second query, unless totals under the
    key's path prefix are wanted (the build's own totals are its usage counters).
    """
    build_id = int(build_id)
    prefix_totals = with_totals and bool(key.path_prefix)
    if not prefix_totals and key.build_id is not None and "build" in key._state.fields_cache:
        if key.build_id != build_id:
            raise Http404
        return key.build
    project_known = "project" in key._state.fields_cache
    queryset = Build.objects.all() if project_known else Build.objects.select_related("project")
    if prefix_totals:
        queryset = queryset.with_totals(path_prefix=key.path_prefix)
    build = get_object_or_404(visible_build(queryset, key, build_id))
    if project_known and build.project_id == key.project_id:
        build.project = key.project  # loaded with the key: no query for what it already knew
    return build
