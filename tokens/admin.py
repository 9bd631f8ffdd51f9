from datetime import timedelta

from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from . import services
from .errors import KeyConflict
from .models import ApiKey, AuditEvent

DESCENDANTS_SHOWN = 50


def _admin_actor(request) -> str:
    return f"user:{request.user.get_username()}"


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("active", "active"),
            ("read-only", "read-only (deploy tokens, finished builds)"),
            ("expired", "expired"),
            ("revoked", "revoked"),
        ]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.in_state(self.value())


class ExpiringSoonFilter(admin.SimpleListFilter):
    title = "expiring soon"
    parameter_name = "expiring"

    def lookups(self, request, model_admin):
        return [("7", "within 7 days"), ("30", "within 30 days")]

    def queryset(self, request, queryset):
        if self.value() not in ("7", "30"):
            return queryset
        now = timezone.now()
        return queryset.filter(
            revoked_at__isnull=True,
            expires_at__gt=now,
            expires_at__lte=now + timedelta(days=int(self.value())),
        )


class LastUsedFilter(admin.SimpleListFilter):
    title = "last used"
    parameter_name = "used"

    def lookups(self, request, model_admin):
        return [
            ("day", "in the last 24 hours"),
            ("month", "in the last 30 days"),
            ("stale", "not in the last 30 days"),
            ("never", "never"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        match self.value():
            case "day":
                return queryset.filter(last_used_at__gte=now - timedelta(days=1))
            case "month":
                return queryset.filter(last_used_at__gte=now - timedelta(days=30))
            case "stale":
                return queryset.filter(last_used_at__lt=now - timedelta(days=30))
            case "never":
                return queryset.filter(last_used_at__isnull=True)
        return queryset


class AuditEventInline(admin.TabularInline):
    model = AuditEvent
    fk_name = "key"
    extra = 0
    can_delete = False
    fields = ["created_at", "action", "actor", "reason", "ip", "detail"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    verbose_name_plural = "audit events of this key"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "name",
        "bound_to",
        "state_display",
        "expires_at",
        "last_used_at",
        "last_used_ip",
        "revoked_reason",
    ]
    list_filter = [
        "kind",
        StateFilter,
        ("project", admin.RelatedOnlyFieldListFilter),
        ExpiringSoonFilter,
        LastUsedFilter,
    ]
    search_fields = ["=id", "name", "project__slug"]
    list_select_related = ["project", "build", "build__project"]
    actions = ["revoke_keys", "rotate_deploy_tokens"]
    inlines = [AuditEventInline]
    # The token is never stored, and its digest is no business of a human: neither is shown.
    exclude = ["digest", "seed"]
    readonly_fields = [
        "kind",
        "project",
        "build",
        "parent",
        "descendants",
        "replaces",
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
        "audit_link",
    ]

    def has_add_permission(self, request) -> bool:
        # Keys are minted by the API and management commands, which show the token once.
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # Revoked keys are history: read-only. Live keys: only the name is editable.
        return super().has_change_permission(request, obj) and (obj is None or not obj.is_revoked())

    def has_delete_permission(self, request, obj=None) -> bool:
        # Revoke instead: deleting would drop the audit trail's subject and cascade silently.
        return False

    @admin.display(description="bound to")
    def bound_to(self, key: ApiKey) -> str:
        return str(key.build) if key.build_id else f"project {key.project.slug}"

    @admin.display(description="state")
    def state_display(self, key: ApiKey) -> str:
        colours = {"active": "green", "read-only": "#b58900", "expired": "gray", "revoked": "red"}
        return format_html('<b style="color:{}">{}</b>', colours[key.state], key.state)

    @admin.display(description="derived keys (whole subtree)")
    def descendants(self, key: ApiKey) -> str:
        subtree = ApiKey.objects.descendants_of(key).order_by("lineage", "pk")
        total = subtree.count()
        if not total:
            return "none"
        rows = format_html_join(
            "",
            '<li><a href="{}">{}</a> (depth {}, {}, {})</li>',
            (
                (
                    reverse("admin:tokens_apikey_change", args=[d.pk]),
                    str(d),
                    d.depth,
                    ", ".join(d.scopes),
                    d.state,
                )
                for d in subtree.select_related("build", "project")[:DESCENDANTS_SHOWN]
            ),
        )
        more = f" (first {DESCENDANTS_SHOWN} shown)" if total > DESCENDANTS_SHOWN else ""
        return format_html("{} key(s){}<ul>{}</ul>", total, more, rows)

    @admin.display(description="audit log")
    def audit_link(self, key: ApiKey) -> str:
        url = reverse("admin:tokens_auditevent_changelist") + f"?key={key.pk}"
        return format_html('<a href="{}">all audit events of this key</a>', url)

    @admin.action(description="Revoke selected keys (and every key derived from them)")
    def revoke_keys(self, request, queryset):
        total = 0
        for key in queryset.filter(revoked_at__isnull=True):
            total += services.key_revoke(
                key=key, reason="revoked by admin", actor=_admin_actor(request)
            )
        self.message_user(request, f"Revoked {total} key(s).", messages.SUCCESS)

    @admin.action(description="Rotate the deploy token of the selected keys' projects")
    def rotate_deploy_tokens(self, request, queryset):
        projects = {key.project_id: key.project for key in queryset.select_related("project")}
        for project in sorted(projects.values(), key=lambda p: p.slug):
            try:
                rotated = services.deploy_token_rotate(
                    project=project, actor=_admin_actor(request), created_by=request.user
                )
            except KeyConflict as refused:
                self.message_user(request, str(refused.detail), messages.ERROR)
                continue
            previous = (
                f" The previous token (key {rotated.previous.pk}) keeps working until "
                f"{rotated.previous.expires_at:%Y-%m-%d %H:%M} UTC."
                if rotated.previous
                else ""
            )
            again = "" if rotated.created else " (already rotated within the grace period)"
            self.message_user(
                request,
                f"New deploy token for {project.slug}{again}, key {rotated.key.pk}, shown once "
                f"(copy it now): {rotated.token}.{previous}",
                messages.WARNING,
            )


class KeyFilter(admin.SimpleListFilter):
    """``?key=<id>`` (linked from each key's page); shown only while it is in use."""

    title = "key"
    parameter_name = "key"

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, f"key {value}")] if value else []

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        # ASCII digits only ("²".isdigit() is true), few enough to fit a key id (a bigint).
        if value.isascii() and value.isdigit() and len(value) < 19:
            return queryset.filter(key_id=int(value))
        return queryset.none()


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "key", "project", "build", "actor", "reason", "ip"]
    list_filter = [
        "action",
        KeyFilter,
        ("project", admin.RelatedOnlyFieldListFilter),
        "created_at",
    ]
    list_select_related = ["key", "project", "build", "build__project"]
    search_fields = ["=key__id", "actor", "reason"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
