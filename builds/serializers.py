from rest_framework import serializers

from .models import Build, StatusCheck


class BuildCreateSerializer(serializers.Serializer):
    ref = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    commit = serializers.RegexField(
        r"^[0-9a-fA-F]{0,64}$", required=False, allow_blank=True, default=""
    )
    trusted = serializers.BooleanField(required=False, default=True)
    metadata = serializers.JSONField(required=False, default=dict)

    def validate_metadata(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be a JSON object.")
        return value


class BuildFinishSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=[s.value for s in Build.FINAL_STATES])


class StatusCheckSerializer(serializers.ModelSerializer):
    class Meta:
        model = StatusCheck
        fields = ["context", "state", "description", "target_url", "created_at"]


class BuildSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    artifact_count = serializers.IntegerField(read_only=True, default=0)
    total_size = serializers.IntegerField(read_only=True, default=0)
    statuses = serializers.SerializerMethodField()

    class Meta:
        model = Build
        fields = [
            "id",
            "project",
            "number",
            "state",
            "ref",
            "commit",
            "trusted",
            "metadata",
            "created_at",
            "finished_at",
            "artifact_count",
            "total_size",
            "statuses",
        ]

    def get_statuses(self, build) -> list[dict]:
        """The latest status per context."""
        latest: dict[str, StatusCheck] = {}
        for status in build.statuses.order_by("-created_at", "-id"):
            latest.setdefault(status.context, status)
        return StatusCheckSerializer(
            sorted(latest.values(), key=lambda s: s.context), many=True
        ).data


class IssuedKeySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    token = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    expires_at = serializers.DateTimeField(allow_null=True)


class IssuedDeployTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    token = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)


class BuildCreatedSerializer(BuildSerializer):
    key = IssuedKeySerializer()
    deploy_token = IssuedDeployTokenSerializer(required=False)

    class Meta(BuildSerializer.Meta):
        fields = [*BuildSerializer.Meta.fields, "key", "deploy_token"]
