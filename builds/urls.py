from django.urls import path

from . import views

urlpatterns = [
    path(
        "projects/<slug:project_slug>/builds/",
        views.BuildCreateView.as_view(),
        name="build-create",
    ),
    path(
        "projects/<slug:project_slug>/deploy-tokens/rotate",
        views.DeployTokenRotateView.as_view(),
        name="deploy-token-rotate",
    ),
    path("builds/<int:build_id>/", views.BuildDetailView.as_view(), name="build-detail"),
    path(
        "builds/<int:build_id>/statuses/",
        views.BuildStatusesView.as_view(),
        name="build-statuses",
    ),
    path("builds/<int:build_id>/finish", views.BuildFinishView.as_view(), name="build-finish"),
]
