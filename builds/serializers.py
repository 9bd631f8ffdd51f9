import json
import unicodedata

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Build, StatusCheck
from .statuses import statuses_latest

METADATA_MAX_BYTES = 16 * 1024


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class BuildCreateSerializer(serializers.Serializer):
    # A build without its ref and commit cannot be traced back to a source: both are required.
    ref = serializers.RegexField(
        r"^[^\x00-\x1f\x7f]+\Z",
        max_length=255,
        error_messages={"invalid": "ref may not contain control characters."},
    )
    commit = serializers.RegexField(
        r"^[0-9a-fA-F]{1,64}\Z",
        error_messages={"invalid": "commit is a hexadecimal commit id (at most 64 digits)."},
    )
    # Fail safe: a build is untrusted (no keys:mint, no deploy token, no webhooks) unless the
    # orchestrator says otherwise, so one that forgets the field cannot hand a fork's job more.
    trusted = serializers.BooleanField(required=False, default=False)
    metadata = serializers.JSONField(required=False, default=dict)

    def validate_metadata(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be a JSON object.")
        encoded = json.dumps(value)
        if len(encoded) > METADATA_MAX_BYTES:
            raise serializers.ValidationError(
                f"metadata may be at most {METADATA_MAX_BYTES} bytes of JSON."
            )
        if _has_nul(value):  # PostgreSQL's jsonb cannot hold NUL
            raise serializers.ValidationError("metadata may not contain NUL characters.")
        return value


class BuildFinishSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=[s.value for s in Build.FINAL_STATES])


class StatusCheckSerializer(serializers.ModelSerializer):
    class Meta:
        model = StatusCheck
        fields = ["context", "state", "description", "target_url", "created_at"]


_NO_CONTROL = r"^[^\x00-\x1f\x7f]*\Z"
# Unicode TR #9 explicit directional embeddings, overrides, isolates and marks.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _unshowable(value: str, *, refused: tuple[str, ...]) -> bool:
    return any(unicodedata.category(char) in refused for char in value)


class StatusReportSerializer(serializers.Serializer):
    context = serializers.RegexField(
        _NO_CONTROL,
        max_length=255,
        error_messages={"invalid": "context may not contain control characters."},
    )
    state = serializers.ChoiceField(choices=StatusCheck.State.choices)
    description = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, default="", trim_whitespace=False
    )
    # Shown as a link in the admin and on the share page: only http(s), never javascript: etc.
    target_url = serializers.URLField(max_length=2000, required=False, allow_blank=True, default="")

    def validate_context(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("context may not be blank.")
        # A context names a check: no invisible or direction-changing characters (Unicode
        # "Cf", e.g. U+202E, U+200B) that would make one look like another.
        if _unshowable(value, refused=("Cc", "Cf", "Cs")):
            raise serializers.ValidationError(
                "context may not contain control, format or invisible characters."
            )
        return value

    def validate_description(self, value: str) -> str:
        # Shown in terminals, logs and pages: no control characters (escape sequences, CR,
        # NUL, which PostgreSQL text cannot hold either), no lone surrogates (unencodable),
        # no bidi controls (Unicode TR #9: text that reads other than it is stored).
        if _unshowable(value, refused=("Cc", "Cs")) or _BIDI_CONTROLS.intersection(value):
            raise serializers.ValidationError(
                "description may not contain control characters or bidi controls."
            )
        return value

    def validate_target_url(self, value: str) -> str:
        if value and value.split(":", 1)[0].lower() not in ("http", "https"):
            raise serializers.ValidationError("target_url must be an http or https URL.")
        return value


class BuildSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    artifact_count = serializers.SerializerMethodField()
    total_size = serializers.SerializerMethodField()
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

    # Totals under a prefix-limited key's prefix when annotated (Build.objects.with_totals),
    # else the build's usage counters.
    def get_artifact_count(self, build) -> int:
        return getattr(build, "artifact_count", build.used_files)

    def get_total_size(self, build) -> int:
        return getattr(build, "total_size", build.used_bytes)

    @extend_schema_field(StatusCheckSerializer(many=True))
    def get_statuses(self, build) -> list[dict]:
        """The latest status per context."""
        return StatusCheckSerializer(statuses_latest(build=build), many=True).data


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
