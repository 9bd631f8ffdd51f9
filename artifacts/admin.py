from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from builds.models import Build
from tokens.services import LinkKeyDead, key_revoke, link_key_check

from .models import Artifact, Blob, Share


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


def _share_state(share: Share) -> str:
    """Whether the share's links work: the same rule the links are checked against."""
    try:
        link_key_check(kid=share.key_id)
    except LinkKeyDead as dead:
        return dead.code.replace("_", " ")
    return "live"


@admin.register(Share)
class ShareAdmin(ReadOnlyAdmin):
    """Shares are created through the API; here they are listed and withdrawn."""

    list_display = ["id", "build", "shared_by", "shared_paths", "prefix", "expires_at", "state"]
    list_filter = ["build__project"]
    search_fields = ["build__project__slug", "prefix"]
    list_select_related = ["build__project", "shared_by", "key"]
    readonly_fields = ["build", "key", "shared_by", "paths", "prefix", "expires_at", "created_at"]
    actions = ["revoke_shares"]

    def has_change_permission(self, request, obj=None) -> bool:
        # Revoking needs the model's change permission (every field stays read-only); staff
        # status alone grants nothing, as for any other model.
        return admin.ModelAdmin.has_change_permission(self, request, obj)

    @admin.display(description="paths")
    def shared_paths(self, share: Share) -> str:
        if not share.paths:
            return f"all under {share.prefix!r}" if share.prefix else "whole build"
        shown = ", ".join(share.paths[:5])
        return shown + (f" (+{len(share.paths) - 5})" if len(share.paths) > 5 else "")

    @admin.display(description="state")
    def state(self, share: Share) -> str:
        return _share_state(share)

    @admin.action(
        description="Revoke the selected shares (their links stop working)", permissions=["change"]
    )
    def revoke_shares(self, request, queryset) -> None:
        revoked = 0
        for share in queryset.select_related("key"):
            revoked += bool(
                key_revoke(
                    key=share.key,
                    reason="share revoked in admin",
                    actor=f"user:{request.user.get_username()}",
                )
            )
        self.message_user(request, f"Revoked {revoked} share(s).", messages.SUCCESS)


class ShareInline(admin.TabularInline):
    model = Share
    fk_name = "build"
    extra = 0
    can_delete = False
    fields = ["link", "shared_by", "paths", "prefix", "expires_at", "state"]
    readonly_fields = fields
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="share")
    def link(self, share: Share) -> str:
        url = reverse("admin:artifacts_share_changelist") + f"?id={share.pk}"
        return format_html('<a href="{}">share {}</a> (revoke from there)', url, share.pk)

    @admin.display(description="state")
    def state(self, share: Share) -> str:
        return _share_state(share)


# Shares appear under their build. builds/ may not import artifacts/ (imports run
# artifacts -> builds), so the inline is added to the build admin from here.
_build_admin = admin.site._registry.get(Build)
if _build_admin is not None and ShareInline not in _build_admin.inlines:
    _build_admin.inlines = [*_build_admin.inlines, ShareInline]
