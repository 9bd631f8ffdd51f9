from rest_framework import serializers

from .models import Artifact

# Formats created_at as the declared field would (ISO 8601 in the current time zone, "Z").
_CREATED_AT = serializers.DateTimeField(read_only=True)


class ArtifactSerializer(serializers.ModelSerializer):
    size = serializers.IntegerField(source="blob.size", read_only=True)
    sha256 = serializers.CharField(source="blob.sha256", read_only=True)

    class Meta:
        model = Artifact
        fields = ["path", "size", "sha256", "content_type", "created_at"]

    # The fields above describe the representation (the API schema is generated from them);
    # the dict itself is built directly: ModelSerializer builds its fields from the model on
    # every instance it is given, a seventh of a small upload's time.
    def to_representation(self, instance: Artifact) -> dict:
        blob = instance.blob
        return {
            "path": instance.path,
            "size": blob.size,
            "sha256": blob.sha256,
            "content_type": instance.content_type,
            "created_at": _CREATED_AT.to_representation(instance.created_at),
        }
