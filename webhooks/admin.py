"""Subscriptions and their delivery log. Secrets are write-only: set on creation, never shown
again (the signing secret once, in a message)."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils import timezone

from . import services
from .models import Delivery, DeliveryAttempt, Event, Subscription


class SubscriptionCreateForm(forms.ModelForm):
    events = forms.MultipleChoiceField(choices=Event.choices, widget=forms.CheckboxSelectMultiple)
    basic_auth_password = forms.CharField(
        required=False, widget=forms.PasswordInput, help_text="Stored encrypted; never shown."
    )
    sigv4_secret_access_key = forms.CharField(
        required=False, widget=forms.PasswordInput, help_text="Stored encrypted; never shown."
    )

    class Meta:
        model = Subscription
        fields = [
            "project",
            "url",
            "events",
            "basic_auth_username",
            "basic_auth_password",
            "sigv4_access_key_id",
            "sigv4_secret_access_key",
            "sigv4_region",
            "sigv4_service",
        ]

    def clean(self):
        data = super().clean()
        basic = (
            {"username": data["basic_auth_username"], "password": data["basic_auth_password"]}
            if data.get("basic_auth_username")
            else None
        )
        sigv4 = (
            {
                "access_key_id": data["sigv4_access_key_id"],
                "secret_access_key": data.get("sigv4_secret_access_key", ""),
                "region": data.get("sigv4_region", ""),
                "service": data.get("sigv4_service", ""),
            }
            if data.get("sigv4_access_key_id")
            else None
        )
        try:
            services._validate(url=data.get("url", ""), basic_auth=basic, sigv4=sigv4)
        except services.InvalidSubscription as error:
            raise ValidationError(str(error.detail)) from None
        data["basic_auth"], data["sigv4"] = basic, sigv4
        return data


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = [
        "number",
        "started_at",
        "status_code",
        "duration_ms",
        "succeeded",
        "error",
        "response_excerpt",
    ]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "url", "active", "disabled_reason", "created_at"]
    list_filter = ["active", "project"]
    search_fields = ["url", "project__slug"]
    actions = ["send_ping", "enable", "rotate_secret"]
    readonly_fields = [
        "project",
        "url",
        "events",
        "state",
        "disabled_reason",
        "disabled_at",
        "consecutive_failures",
        "previous_secrets_signing",
        "basic_auth_username",
        "sigv4_access_key_id",
        "sigv4_region",
        "sigv4_service",
        "created_at",
    ]
    exclude = ["active"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = SubscriptionCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request, obj=None):
        if obj is None:
            return SubscriptionCreateForm.Meta.fields
        return self.readonly_fields

    @admin.display(description="state")
    def state(self, obj) -> str:
        return "active" if obj.active else f"disabled: {obj.disabled_reason}"

    @admin.display(description="superseded secrets still signing")
    def previous_secrets_signing(self, obj) -> str:
        # Only how many and until when: the secrets themselves are never shown.
        previous = services.superseded_secrets(obj, timezone.now())
        if not previous:
            return "none"
        until = ", ".join(f"{expires_at:%Y-%m-%d %H:%M:%S} UTC" for _, expires_at in previous)
        return f"{len(previous)}, until {until}"

    def save_model(self, request, obj, form, change):
        if change:
            return
        data = form.cleaned_data
        created = services.subscription_create(
            project=data["project"],
            url=data["url"],
            events=data["events"],
            basic_auth=data["basic_auth"],
            sigv4=data["sigv4"],
        )
        # The admin goes on with ``obj`` (log entry, redirect): make it the row just created.
        obj.__dict__.update(created.subscription.__dict__)
        self.message_user(
            request,
            f"Signing secret (shown once; the receiver verifies webhook-signature with it): "
            f"{created.signing_secret}",
            messages.WARNING,
        )

    def save_related(self, request, form, formsets, change):
        pass

    @admin.action(description="Send a ping")
    def send_ping(self, request, queryset):
        for subscription in queryset.filter(active=True):
            services.ping_send(subscription=subscription)
        self.message_user(request, "Ping queued to the active subscriptions selected.")

    @admin.action(description="Re-enable")
    def enable(self, request, queryset):
        for subscription in queryset:
            services.subscription_enable(subscription=subscription)
        self.message_user(request, "Re-enabled.")

    @admin.action(description="Rotate the signing secret (old one signs too for a grace period)")
    def rotate_secret(self, request, queryset):
        for subscription in queryset:
            rotated = services.subscription_rotate_secret(subscription=subscription)
            until = rotated.previous_secret_expires_at
            self.message_user(
                request,
                f"New signing secret for #{subscription.pk} (shown once): "
                f"{rotated.signing_secret} (the one it replaces signs too until "
                f"{until:%Y-%m-%d %H:%M:%S} UTC)",
                messages.WARNING,
            )


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "webhook_id",
        "event",
        "subscription",
        "build",
        "state",
        "attempt_count",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["state", "event"]
    search_fields = ["webhook_id", "subscription__url"]
    list_select_related = ["subscription__project", "build__project"]
    actions = ["redeliver"]
    inlines = [DeliveryAttemptInline]
    exclude = ["lease_token"]
    readonly_fields = [
        "subscription",
        "event",
        "build",
        "webhook_id",
        "occurred_at",
        "state",
        "attempt_count",
        "schedule_index",
        "next_attempt_at",
        "enqueued_at",
        "lease_until",
        "delivered_at",
        "last_error",
        "read_key",
        "status_key",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Redeliver (same webhook-id)")
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset.filter(subscription__active=True):
            services.delivery_redeliver(delivery=delivery)
            count += 1
        self.message_user(request, f"{count} deliveries queued again at {timezone.now():%H:%M:%S}.")
