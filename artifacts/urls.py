from django.urls import path, re_path

from . import share_views, views

urlpatterns = [
    path(
        "builds/<int:build_id>/artifacts/",
        views.ArtifactListView.as_view(),
        name="artifact-list",
    ),
    path("builds/<int:build_id>/share", share_views.BuildShareView.as_view(), name="build-share"),
    # (?s:...) so that a path with a newline reaches the path rules (400), not a 404.
    re_path(
        r"^builds/(?P<build_id>[0-9]+)/artifacts/(?P<artifact_path>(?s:.+))$",
        views.ArtifactView.as_view(),
        name="artifact",
    ),
]
