from django.urls import path

from . import views

urlpatterns = [
    path(
        "projects/<slug:project_slug>/webhooks/",
        views.WebhookListView.as_view(),
        name="webhook-list",
    ),
    path(
        "projects/<slug:project_slug>/webhooks/<int:subscription_id>/",
        views.WebhookDetailView.as_view(),
        name="webhook-detail",
    ),
    path(
        "projects/<slug:project_slug>/webhooks/<int:subscription_id>/rotate-secret",
        views.WebhookRotateSecretView.as_view(),
        name="webhook-rotate-secret",
    ),
    path(
        "projects/<slug:project_slug>/webhooks/<int:subscription_id>/deliveries/",
        views.WebhookDeliveriesView.as_view(),
        name="webhook-deliveries",
    ),
]
