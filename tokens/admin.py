from django.contrib import admin, messages
from django.utils.html import format_html

from . import services
from .models import ApiKey, AuditEvent


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "name", "bound_to", "state_display", "expires_at", "last_used_at"]
    list_filter = ["kind", "project", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["=id", "name", "project__slug"]
    list_select_related = ["project", "build", "build__project"]
    actions = ["revoke_keys"]
    # The token is never stored, and its digest is no business of a human: neither is shown.
    exclude = ["digest", "seed"]
    readonly_fields = [
        "kind",
        "project",
        "build",
        "parent",
        "lineage",
        "scopes",
        "path_prefix",
        "ref_pattern",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "revoked_reason",
        "last_used_at",
        "last_used_ip",
        "state_display",
    ]

    def has_add_permission(self, request) -> bool:
        # Keys are minted by the API and management commands, which show the token once.
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None or not obj.is_revoked()

    @admin.display(description="bound to")
    def bound_to(self, key: ApiKey) -> str:
        return str(key.build) if key.build_id else f"project {key.project.slug}"

    @admin.display(description="state")
    def state_display(self, key: ApiKey) -> str:
        colours = {"active": "green", "read-only": "#b58900", "expired": "gray", "revoked": "red"}
        return format_html('<b style="color:{}">{}</b>', colours[key.state], key.state)

    @admin.action(description="Revoke selected keys (and every key derived from them)")
    def revoke_keys(self, request, queryset):
        total = 0
        for key in queryset.filter(revoked_at__isnull=True):
            total += services.key_revoke(
                key=key, reason="revoked by admin", actor=f"user:{request.user.get_username()}"
            )
        self.message_user(request, f"Revoked {total} key(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "key", "project", "build", "actor", "reason", "ip"]
    list_filter = ["action", "project", "created_at"]
    search_fields = ["=key__id", "actor", "reason"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
