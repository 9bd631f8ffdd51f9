from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    """django.contrib.admin, on our site (artifactcourier.admin.AdminSite)."""

    default_site = "artifactcourier.admin.AdminSite"
