from django.urls import path, re_path

from . import share_views, views

urlpatterns = [
    path(
        "builds/<int:build_id>/artifacts/",
        views.ArtifactListView.as_view(),
        name="artifact-list",
    ),
    path("builds/<int:build_id>/share", share_views.BuildShareView.as_view(), name="build-share"),
    # Before the artifact paths: POST is the batch upload; GET and PUT still reach an artifact
    # named "batch".
    path(
        "builds/<int:build_id>/artifacts/batch",
        views.ArtifactBatchView.as_view(),
        name="artifact-batch",
    ),
    # (?s:...) so that a path with a newline reaches the path rules (400), not a 404.
    re_path(
        r"^builds/(?P<build_id>[0-9]+)/artifacts/(?P<artifact_path>(?s:.+))$",
        views.ArtifactView.as_view(),
        name="artifact",
    ),
]
