"""Signed links (no credential header): ``/dl/builds/<id>/`` lists, ``/dl/builds/<id>/<path>``
serves one artifact."""

from django.urls import re_path

from . import share_views

urlpatterns = [
    # (?s:...) so that any path reaches the view and gets its 403, never a 404 page.
    re_path(
        r"^builds/(?P<build_id>[0-9]{1,18})/(?P<rest>(?s:.*))$",
        share_views.SignedLinkView.as_view(),
        name="signed-link",
    ),
]
