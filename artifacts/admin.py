from django.contrib import admin

from .models import Artifact, Blob


class ReadOnlyAdmin(admin.ModelAdmin):
    """Artifacts are written only through the API and removed only by retention."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdmin):
    list_display = ["path", "build", "size", "sha256", "content_type", "created_at"]
    list_filter = ["build__project"]
    search_fields = ["path", "blob__sha256", "build__project__slug"]
    list_select_related = ["build__project", "blob"]
    date_hierarchy = "created_at"

    @admin.display(ordering="blob__size")
    def size(self, artifact: Artifact) -> int:
        return artifact.blob.size

    @admin.display(ordering="blob__sha256", description="SHA-256")
    def sha256(self, artifact: Artifact) -> str:
        return artifact.blob.sha256


@admin.register(Blob)
class BlobAdmin(ReadOnlyAdmin):
    list_display = [
        "sha256",
        "size",
        "reference_count",
        "storage_name",
        "created_at",
        "referenced_at",
    ]
    search_fields = ["sha256"]

    def get_queryset(self, request):
        return super().get_queryset(request).with_reference_count()

    @admin.display(ordering="reference_count", description="artifacts referencing it")
    def reference_count(self, blob: Blob) -> int:
        return blob.reference_count
