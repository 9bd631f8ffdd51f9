from rest_framework import serializers

from .models import Delivery, DeliveryAttempt, Event, Subscription

_PRINTABLE = r"^[^\x00-\x1f\x7f]*\Z"


class BasicAuthSerializer(serializers.Serializer):
    username = serializers.RegexField(_PRINTABLE, max_length=200)
    password = serializers.RegexField(_PRINTABLE, max_length=500, write_only=True)

    def validate_username(self, value: str) -> str:
        if ":" in value:  # RFC 7617: the user-id cannot contain a colon
            raise serializers.ValidationError("username may not contain ':'.")
        return value


class SigV4Serializer(serializers.Serializer):
    access_key_id = serializers.RegexField(r"^[A-Za-z0-9]{1,128}\Z")
    secret_access_key = serializers.RegexField(r"^[\x21-\x7e]{1,256}\Z", write_only=True)
    region = serializers.RegexField(r"^[a-z0-9-]{1,64}\Z")
    service = serializers.RegexField(r"^[a-z0-9-]{1,64}\Z")


class SubscriptionCreateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, trim_whitespace=False)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Event.choices), min_length=1, max_length=10
    )
    basic_auth = BasicAuthSerializer(required=False)
    sigv4 = SigV4Serializer(required=False)


class SubscriptionSerializer(serializers.ModelSerializer):
    basic_auth = serializers.SerializerMethodField()
    sigv4 = serializers.SerializerMethodField()

    class Meta:
        model = Subscription
        fields = [
            "id",
            "url",
            "events",
            "active",
            "disabled_reason",
            "disabled_at",
            "basic_auth",
            "sigv4",
            "created_at",
        ]

    def get_basic_auth(self, obj) -> dict | None:
        # Secrets are never read back: only that they are set.
        return {"username": obj.basic_auth_username} if obj.basic_auth_username else None

    def get_sigv4(self, obj) -> dict | None:
        if not obj.uses_sigv4:
            return None
        return {
            "access_key_id": obj.sigv4_access_key_id,
            "region": obj.sigv4_region,
            "service": obj.sigv4_service,
        }


class SubscriptionCreatedSerializer(SubscriptionSerializer):
    signing_secret = serializers.CharField()

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "signing_secret"]


class SigningSecretSerializer(serializers.Serializer):
    signing_secret = serializers.CharField()
    previous_secret_expires_at = serializers.DateTimeField(
        help_text="When the secret just superseded stops signing (earlier ones keep their own)."
    )


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "started_at",
            "duration_ms",
            "status_code",
            "succeeded",
            "error",
            "response_excerpt",
        ]


class DeliverySerializer(serializers.ModelSerializer):
    build = serializers.PrimaryKeyRelatedField(read_only=True)
    attempts = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "webhook_id",
            "event",
            "build",
            "state",
            "attempt_count",
            "next_attempt_at",
            "delivered_at",
            "last_error",
            "created_at",
            "attempts",
        ]
