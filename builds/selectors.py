from django.shortcuts import get_object_or_404

from tokens.access import visible_build

from .models import Build


def build_get_for_key(*, key, build_id: int | str, with_totals: bool = False) -> Build:
    """The build ``build_id`` (an int, or the digits a URL captured) if ``key`` reaches it, else
    404 (also when it exists elsewhere)."""
    queryset = (
        Build.objects.with_totals(path_prefix=key.path_prefix)
        if with_totals
        else Build.objects.all()
    )
    return get_object_or_404(visible_build(queryset, key, int(build_id)))
