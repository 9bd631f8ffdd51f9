from django.contrib import admin
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from .models import Build, Project, StatusCheck
from .statuses import statuses_latest


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "deploy_tokens_enabled",
        "retention_days",
        "used_files",
        "used_bytes",
        "created_at",
    ]
    readonly_fields = ["used_files", "used_bytes"]
    search_fields = ["slug", "name"]


class StatusCheckInline(admin.TabularInline):
    """Every report, newest first (the history); the build's page shows the latest per context
    above it."""

    model = StatusCheck
    verbose_name_plural = "status reports (history)"
    extra = 0
    can_delete = False
    readonly_fields = ["context", "state", "description", "target_url", "key", "created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Build)
class BuildAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "state",
        "ref",
        "commit",
        "trusted",
        "used_files",
        "used_bytes",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "trusted", "project"]
    search_fields = ["project__slug", "ref", "commit"]
    list_select_related = ["project"]
    readonly_fields = [
        "project",
        "number",
        "state",
        "used_files",
        "used_bytes",
        "created_at",
        "finished_at",
        "downstream_statuses",
    ]
    inlines = [StatusCheckInline]

    @admin.display(description="downstream statuses (latest per context)")
    def downstream_statuses(self, build: Build) -> str:
        latest = statuses_latest(build=build)
        if not latest:
            return "-"
        return format_html_join(
            mark_safe("<br>"),
            "{}: <strong>{}</strong> {}",
            ((s.context, s.state, s.description) for s in latest),
        )
