from rest_framework import serializers

from .models import Artifact


class ArtifactSerializer(serializers.ModelSerializer):
    size = serializers.IntegerField(source="blob.size", read_only=True)
    sha256 = serializers.CharField(source="blob.sha256", read_only=True)

    class Meta:
        model = Artifact
        fields = ["path", "size", "sha256", "content_type", "created_at"]
