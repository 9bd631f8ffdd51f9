from rest_framework import serializers

from .models import ApiKey
from .scopes import Scope


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
            "ref_pattern",
            "expires_at",
            "created_at",
            "last_used_at",
            "last_used_ip",
        ]

    def get_scopes(self, key: ApiKey) -> list[str]:
        return sorted(str(s) for s in key.effective_scopes)


class KeyDeriveSerializer(serializers.Serializer):
    scopes = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        allow_empty=False,
        max_length=len(Scope),
        help_text="A subset of the caller's effective scopes. Default: all of them except "
        "keys:mint, which is passed on only when asked for.",
    )
    expires_in = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="Seconds. Default and cap: KEY_DERIVED_MAX_SECONDS, and never beyond the "
        "caller's own expiry.",
    )
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    path_prefix = serializers.CharField(
        max_length=512,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Only artifacts under this path; must lie inside the caller's own prefix.",
    )


class DerivedKeySerializer(serializers.ModelSerializer):
    token = serializers.CharField(help_text="Shown only in this response.")
    scopes = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = ApiKey
        fields = ["id", "token", "kind", "name", "scopes", "path_prefix", "expires_at", "parent"]


class DeployTokenRotateSerializer(serializers.Serializer):
    expires_in = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="Seconds until the new token expires. Default and cap: DEPLOY_TOKEN_MAX_DAYS.",
    )
    ref_pattern = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Only builds whose ref matches this glob (refs/tags/*). Omitted: keep the "
        "current token's restriction; empty: no restriction.",
    )


class PreviousDeployTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    expires_at = serializers.DateTimeField(help_text="The end of its grace period.")


class RotatedDeployTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="key.id")
    token = serializers.CharField(help_text="The new deploy token.")
    expires_at = serializers.DateTimeField(source="key.expires_at")
    ref_pattern = serializers.CharField(source="key.ref_pattern")
    previous = PreviousDeployTokenSerializer(allow_null=True)
