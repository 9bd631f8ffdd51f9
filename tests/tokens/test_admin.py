import re
from datetime import timedelta

import pytest
from django.utils import timezone

from builds.services import build_finish
from devtools.factories import make_build, make_project, make_project_key
from tokens.models import ApiKey, AuditEvent
from tokens.services import deploy_token_current, key_derive, key_revoke

pytestmark = pytest.mark.django_db

KEYS = "/admin/tokens/apikey/"
AUDIT = "/admin/tokens/auditevent/"


def page(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def listed_ids(html: str) -> set[int]:
    return {int(i) for i in re.findall(r'name="_selected_action" value="(\d+)"', html)}


def listed_events(html: str) -> set[int]:
    """The audit log has no actions (read-only), so rows are found by their links."""
    return {int(i) for i in re.findall(r'href="/admin/tokens/auditevent/(\d+)/change/', html)}


@pytest.fixture
def deploy(project):
    project.deploy_tokens_enabled = True
    project.save(update_fields=["deploy_tokens_enabled"])
    return deploy_token_current(project=project)


def test_a_key_page_shows_its_descendants_audit_and_last_use_but_never_a_token(
    admin_client, api, build
):
    child, child_token = key_derive(parent=build.key, scopes=["artifacts:read", "keys:mint"])
    grandchild, _ = key_derive(parent=child, scopes=["artifacts:read"])
    api.as_key(build.token).get("/api/v1/keys/self", REMOTE_ADDR="10.9.8.7")
    html = page(admin_client, f"{KEYS}{build.key.pk}/change/")
    assert "2 key(s)" in html
    assert f"/admin/tokens/apikey/{child.pk}/change/" in html
    assert f"/admin/tokens/apikey/{grandchild.pk}/change/" in html
    assert "10.9.8.7" in html
    assert "audit events of this key" in html and '<td class="field-action">' in html
    assert f"{AUDIT}?key={build.key.pk}" in html
    for secret in (build.token, child_token, build.key.digest):
        assert secret not in html


def test_revoked_keys_are_read_only_and_no_key_can_be_deleted(admin_client, build):
    html = page(admin_client, f"{KEYS}{build.key.pk}/change/")
    assert 'name="name"' in html and "Delete" not in html
    key_revoke(key=build.key, reason="test", actor="test")
    html = page(admin_client, f"{KEYS}{build.key.pk}/change/")
    assert 'name="name"' not in html
    response = admin_client.post(f"{KEYS}{build.key.pk}/change/", {"name": "renamed"})
    assert response.status_code == 403
    assert admin_client.post(f"{KEYS}{build.key.pk}/delete/").status_code == 403


def test_the_admin_revoke_action_cascades_to_descendants(admin_client, api, build):
    _, child_token = key_derive(parent=build.key, scopes=["artifacts:read"])
    admin_client.post(KEYS, {"action": "revoke_keys", "_selected_action": [build.key.pk]})
    assert api.as_key(child_token).get("/api/v1/keys/self").status_code == 401
    event = AuditEvent.objects.get(action="revoke")
    assert event.actor == "user:admin" and event.detail == {"revoked_keys": 2}


def test_the_rotate_action_shows_the_new_token_once(admin_client, api, build, deploy, settings):
    settings.DEPLOY_TOKEN_ROTATION_GRACE_SECONDS = 3600
    old_key, old_token = deploy
    response = admin_client.post(
        KEYS, {"action": "rotate_deploy_tokens", "_selected_action": [old_key.pk]}, follow=True
    )
    html = response.content.decode()
    new_token = re.search(r"\(copy it now\): (acd_\w+)", html).group(1)
    assert new_token != old_token
    assert "keeps working until" in html
    assert api.as_key(new_token).get(f"/api/v1/builds/{build.build.pk}/").status_code == 200
    assert api.as_key(old_token).get(f"/api/v1/builds/{build.build.pk}/").status_code == 200
    assert new_token not in page(admin_client, KEYS)
    new_key = ApiKey.objects.get(replaces=old_key)
    assert new_token not in page(admin_client, f"{KEYS}{new_key.pk}/change/")
    assert AuditEvent.objects.get(action="rotate").actor == "user:admin"


def test_the_rotate_action_reports_projects_without_deploy_tokens(admin_client, build):
    response = admin_client.post(
        KEYS, {"action": "rotate_deploy_tokens", "_selected_action": [build.key.pk]}, follow=True
    )
    assert "Deploy tokens are not enabled for project app" in response.content.decode()


def test_key_filters(admin_client, api, project, build, other_build, deploy):
    deploy_key, _ = deploy
    now = timezone.now()
    ApiKey.objects.filter(pk=deploy_key.pk).update(expires_at=now + timedelta(days=5))
    ApiKey.objects.filter(pk=other_build.key.pk).update(expires_at=now - timedelta(seconds=1))
    api.as_key(build.token).get("/api/v1/keys/self")
    assert listed_ids(page(admin_client, f"{KEYS}?kind__exact=deploy")) == {deploy_key.pk}
    assert listed_ids(page(admin_client, f"{KEYS}?state=expired")) == {other_build.key.pk}
    assert listed_ids(page(admin_client, f"{KEYS}?state=read-only")) == {deploy_key.pk}
    assert listed_ids(page(admin_client, f"{KEYS}?state=active")) == {build.key.pk}
    assert listed_ids(page(admin_client, f"{KEYS}?expiring=7")) == {deploy_key.pk}
    assert listed_ids(page(admin_client, f"{KEYS}?used=day")) == {build.key.pk}
    assert build.key.pk not in listed_ids(page(admin_client, f"{KEYS}?used=never"))
    assert listed_ids(page(admin_client, f"{KEYS}?project__id__exact={project.pk}")) == {
        build.key.pk,
        other_build.key.pk,
        deploy_key.pk,
    }


def test_audit_log_filters_by_key_project_action_and_time(admin_client, build, other_project_build):
    key_revoke(key=build.key, reason="test", actor="test")
    key_revoke(key=other_project_build.key, reason="test", actor="test")
    mine = set(AuditEvent.objects.filter(key=build.key).values_list("pk", flat=True))
    assert listed_events(page(admin_client, f"{AUDIT}?key={build.key.pk}")) == mine
    by_project = page(admin_client, f"{AUDIT}?project__id__exact={build.build.project_id}")
    assert listed_events(by_project) == mine
    revokes = listed_events(page(admin_client, f"{AUDIT}?action__exact=revoke"))
    assert len(revokes) == 2
    today = timezone.now()
    dated = f"{AUDIT}?created_at__year={today.year}&created_at__month={today.month}"
    assert len(listed_events(page(admin_client, dated))) == AuditEvent.objects.count()
    assert listed_events(page(admin_client, f"{AUDIT}?key=nonsense")) == set()


def test_the_audit_log_is_read_only(admin_client, build):
    event = AuditEvent.objects.first()
    html = page(admin_client, f"{AUDIT}{event.pk}/change/")
    assert "Save" not in html
    assert admin_client.post(f"{AUDIT}{event.pk}/change/", {"reason": "x"}).status_code == 403
    assert admin_client.post(f"{AUDIT}{event.pk}/delete/").status_code == 403
    assert admin_client.get(f"{AUDIT}add/").status_code == 403


def test_the_rotate_action_works_again_after_the_new_token_was_revoked(
    admin_client, api, build, deploy
):
    old_key, _ = deploy
    rotate = {"action": "rotate_deploy_tokens", "_selected_action": [old_key.pk]}
    admin_client.post(KEYS, rotate)
    new_key = ApiKey.objects.get(replaces=old_key)
    admin_client.post(KEYS, {"action": "revoke_keys", "_selected_action": [new_key.pk]})

    response = admin_client.post(KEYS, rotate, follow=True)
    assert response.status_code == 200
    *_, fresh_token = re.findall(r"\(copy it now\): (acd_\w+)", response.content.decode())
    assert api.as_key(fresh_token).get(f"/api/v1/builds/{build.build.pk}/").status_code == 200
    assert ApiKey.objects.get(replaces=new_key).is_alive()


def test_the_state_filter_lists_each_key_under_the_state_it_is_in(
    admin_client, project, build, deploy
):
    """Every kind of key in every context, each with its state written down by hand (not
    computed by the rule under test), and the admin filter must list exactly those."""
    finished = make_build(project, ref="refs/heads/done")
    status_key, _ = key_derive(parent=finished.key, scopes=["build:status"])
    written_key, _ = key_derive(parent=finished.key, scopes=["artifacts:read", "artifacts:write"])
    build_finish(build=finished.build, state="succeeded")
    read_only, _ = key_derive(parent=build.key, scopes=["artifacts:read"])
    minting, _ = key_derive(parent=build.key, scopes=["keys:mint", "artifacts:read"])
    writing, _ = key_derive(parent=build.key, scopes=["artifacts:write"])
    fork = make_build(project, trusted=False)
    opted_out = make_project(slug="opted-out", deploy_tokens_enabled=True)
    switched_off, _ = deploy_token_current(project=opted_out)
    type(opted_out).objects.filter(pk=opted_out.pk).update(deploy_tokens_enabled=False)
    make_project_key(project)
    project_key = ApiKey.objects.get(kind="project")
    revoked = make_build(project).key
    key_revoke(key=revoked, reason="test", actor="test")
    expired = make_build(project).key
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now())

    expected = {
        build.key.pk: "active",  # running build
        deploy[0].pk: "read-only",  # deploy token: artifacts:read only
        finished.key.pk: "read-only",  # finished build: read + keys:mint
        status_key.pk: "active",  # build:status survives the finish
        written_key.pk: "read-only",  # lost artifacts:write to the finish
        read_only.pk: "read-only",
        minting.pk: "read-only",  # keys:mint alone changes nothing
        writing.pk: "active",
        fork.key.pk: "active",  # can still upload; only keys:mint is withheld
        switched_off.pk: "read-only",  # holds nothing while its project opted out
        project_key.pk: "active",  # builds:create
        revoked.pk: "revoked",
        expired.pk: "expired",
    }
    assert set(ApiKey.objects.values_list("pk", flat=True)) == set(expected)
    for state in ApiKey.State:
        listed = listed_ids(page(admin_client, f"{KEYS}?state={state.value}"))
        assert listed == {pk for pk, s in expected.items() if s == state}, state
