from django.contrib import admin

from .models import Build, Project, StatusCheck


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
    model = StatusCheck
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
    ]
    inlines = [StatusCheckInline]
