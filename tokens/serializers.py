from rest_framework import serializers

from .models import ApiKey


class KeySerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    scopes = serializers.SerializerMethodField(help_text="Effective now.")
    state = serializers.CharField(read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "kind",
            "name",
            "project",
            "build",
            "parent",
            "scopes",
            "state",
            "path_prefix",
            "expires_at",
            "created_at",
            "last_used_at",
        ]

    def get_scopes(self, key: ApiKey) -> list[str]:
        return sorted(str(s) for s in key.effective_scopes)
