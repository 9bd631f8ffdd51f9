from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from tokens.models import ApiKey, AuditEvent
from tokens.services import deploy_token_current, deploy_token_rotate
from tokens.tasks import key_expiry_warn

pytestmark = pytest.mark.django_db


@pytest.fixture
def deploy_key(project):
    project.deploy_tokens_enabled = True
    project.save(update_fields=["deploy_tokens_enabled"])
    return deploy_token_current(project=project)[0]


def expire_in(key: ApiKey, days: float) -> None:
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() + timedelta(days=days))


def warnings_for(key: ApiKey) -> list[str]:
    return list(
        AuditEvent.objects.filter(key=key, action="expiry_warning")
        .order_by("id")
        .values_list("reason", flat=True)
    )


def run_command() -> str:
    out = StringIO()
    call_command("key_expiry_warnings", stdout=out)
    return out.getvalue()


def test_a_token_far_from_expiry_is_not_reported(deploy_key):
    assert "No key expires" in run_command()
    assert warnings_for(deploy_key) == []


def test_each_threshold_is_audited_once(deploy_key):
    expire_in(deploy_key, 20)
    first = run_command()
    assert f"NEW key {deploy_key.pk} (deploy, project app)" in first
    assert "within 30 days" in first
    run_command()
    assert key_expiry_warn() == 0
    assert warnings_for(deploy_key) == ["expires within 30 days"]

    expire_in(deploy_key, 5)
    assert key_expiry_warn() == 1
    assert warnings_for(deploy_key) == ["expires within 30 days", "expires within 7 days"]
    assert key_expiry_warn() == 0


def test_a_token_created_close_to_expiry_gets_only_the_closest_warning(deploy_key):
    expire_in(deploy_key, 3)
    run_command()
    expire_in(deploy_key, 2)
    run_command()
    assert warnings_for(deploy_key) == ["expires within 7 days"]


def test_a_token_replaced_by_rotation_is_not_reported(deploy_key, project):
    deploy_token_rotate(project=project, actor="test")
    key_expiry_warn()
    assert warnings_for(deploy_key) == []


def test_revoked_and_short_lived_keys_are_not_reported(build, deploy_key):
    expire_in(build.key, 2)
    expire_in(deploy_key, 2)
    ApiKey.objects.filter(pk=deploy_key.pk).update(revoked_at=timezone.now())
    assert key_expiry_warn() == 0


def test_what_beat_schedules_is_a_registered_task_that_warns(deploy_key):
    """Run the entry the way beat would: by the task name in the Celery app's schedule, looked
    up in the app's registry (a typo in either, or a task doing nothing, fails here)."""
    from artifactcourier.celery import app

    entries = [e for e in app.conf.beat_schedule.values() if e["task"].startswith("tokens.")]
    assert entries, "no tokens task in the beat schedule"
    assert all(e["schedule"] > 0 for e in entries)
    expire_in(deploy_key, 5)
    for entry in entries:
        app.tasks[entry["task"]].apply().get()
    assert warnings_for(deploy_key) == ["expires within 7 days"]
