"""Every endpoint in the URLconf x every credential state, against an explicit expected table.

The endpoint list is derived from the URLconf at collection time, so a new endpoint without a
row in EXPECTED fails here instead of being left unchecked. Each case builds a fresh world (one
project with a running build holding an artifact, a second build, a second project) and sends
one request with one credential; the status must be exactly the one in the table: no
unexpected allow, no unexpected refusal, never a 5xx.
"""

import io
import tarfile
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from builds.services import build_finish
from devtools.factories import make_build, make_project, make_project_key
from tests.conftest import Api
from tokens.models import ApiKey
from tokens.scopes import Scope
from tokens.services import deploy_token_current, deploy_token_rotate, key_derive, key_revoke
from webhooks.services import subscription_create

# --- credential states ------------------------------------------------------------------------

DEAD = ["none", "malformed", "bad_checksum", "expired", "revoked", "revoked_parent", "past_grace"]
LIVE = [
    "running_build",  # the build's own key, build running
    "finished_build",  # the build's own key after the build finished
    "other_build",  # the key of another build of the same project
    "other_project",  # a project key (builds:create, tokens:manage, webhooks:manage), elsewhere
    "derived_read_only",  # derived from the build key: artifacts:read only
    "derived_prefix",  # derived: read, write, keys:mint under docs/ (the artifact is in dist/)
    "deploy_current",  # the project's deploy token
    "deploy_in_grace",  # the previous deploy token, rotated, inside its grace period
    "project",  # the project's key with builds:create, tokens:manage and webhooks:manage
    "staff_session",  # a staff user signed in to the admin (session cookie, no token)
]
STATES = DEAD + LIVE


def row(**live: int) -> dict[str, int]:
    """An expected row: the dead credentials are 401 unless stated, every live state stated."""
    assert set(live) - set(DEAD) == set(LIVE), f"row must state all of {LIVE}"
    return {**dict.fromkeys(DEAD, 401), **live}


def same_for_all(status: int) -> dict[str, int]:
    return dict.fromkeys(STATES, status)


# OPTIONS needs a credential and answers nothing (405): DRF metadata is switched off.
OPTIONS_AUTHENTICATED = row(**{**dict.fromkeys(LIVE, 405), "staff_session": 401})
READ_BUILD = row(
    running_build=200,
    finished_build=200,
    other_build=404,
    other_project=403,
    derived_read_only=200,
    derived_prefix=200,
    deploy_current=200,
    deploy_in_grace=200,
    project=403,
    staff_session=401,
)
MANAGE_WEBHOOKS = row(
    running_build=403,
    finished_build=403,
    other_build=403,
    other_project=404,
    derived_read_only=403,
    derived_prefix=403,
    deploy_current=403,
    deploy_in_grace=403,
    project=200,
    staff_session=200,
)

EXPECTED: dict[tuple[str, str], dict[str, int]] = {
    ("landing", "GET"): same_for_all(200),
    ("healthz", "GET"): same_for_all(200),
    ("readyz", "GET"): same_for_all(200),
    ("schema", "GET"): same_for_all(200),
    ("schema", "OPTIONS"): same_for_all(405),
    ("docs", "GET"): same_for_all(200),
    ("docs", "OPTIONS"): same_for_all(405),
    ("key-self", "GET"): row(**{**dict.fromkeys(LIVE, 200), "staff_session": 401}),
    ("key-self", "OPTIONS"): OPTIONS_AUTHENTICATED,
    ("key-derive", "POST"): row(
        running_build=201,
        finished_build=201,
        other_build=201,  # derives from itself: its own build, not ours
        other_project=403,
        derived_read_only=403,
        derived_prefix=201,
        deploy_current=403,
        deploy_in_grace=403,
        project=403,
        staff_session=401,
    ),
    ("key-derive", "OPTIONS"): OPTIONS_AUTHENTICATED,
    # The target is a key derived from the running build's key.
    ("key-revoke", "DELETE"): row(
        running_build=204,
        finished_build=204,
        other_build=404,
        other_project=404,
        derived_read_only=404,  # a sibling
        derived_prefix=404,
        deploy_current=404,
        deploy_in_grace=404,
        project=404,
        staff_session=401,
    ),
    ("key-revoke", "OPTIONS"): OPTIONS_AUTHENTICATED,
    ("build-create", "POST"): row(
        running_build=403,
        finished_build=403,
        other_build=403,
        other_project=404,
        derived_read_only=403,
        derived_prefix=403,
        deploy_current=403,
        deploy_in_grace=403,
        project=201,
        staff_session=401,
    ),
    ("build-create", "OPTIONS"): OPTIONS_AUTHENTICATED,
    ("deploy-token-rotate", "POST"): row(
        running_build=403,
        finished_build=403,
        other_build=403,
        other_project=404,
        derived_read_only=403,
        derived_prefix=403,
        deploy_current=403,
        deploy_in_grace=403,
        project=201,
        staff_session=201,
    ),
    ("deploy-token-rotate", "OPTIONS"): row(**dict.fromkeys(LIVE, 405)),
    ("build-detail", "GET"): READ_BUILD,
    ("build-detail", "OPTIONS"): OPTIONS_AUTHENTICATED,
    ("build-finish", "POST"): row(
        running_build=200,
        finished_build=409,  # finishing twice is a conflict, not a stolen key
        other_build=404,
        other_project=403,
        derived_read_only=403,
        derived_prefix=403,
        deploy_current=403,
        deploy_in_grace=403,
        project=403,
        staff_session=401,
    ),
    ("build-finish", "OPTIONS"): OPTIONS_AUTHENTICATED,
    ("build-statuses", "GET"): READ_BUILD,
    ("build-statuses", "POST"): row(
        running_build=201,
        finished_build=403,  # a finished build's own key no longer reports; derived ones do
        other_build=404,
        other_project=403,
        derived_read_only=403,
        derived_prefix=403,
        deploy_current=403,
        deploy_in_grace=403,
        project=403,
        staff_session=401,
    ),
    ("build-statuses", "OPTIONS"): OPTIONS_AUTHENTICATED,
    # Webhooks: a project key with webhooks:manage (both project keys here hold it), or staff.
    ("webhook-list", "GET"): MANAGE_WEBHOOKS,
    ("webhook-list", "POST"): {**MANAGE_WEBHOOKS, "project": 201, "staff_session": 201},
    ("webhook-list", "OPTIONS"): row(**dict.fromkeys(LIVE, 405)),
    ("webhook-detail", "GET"): MANAGE_WEBHOOKS,
    ("webhook-detail", "DELETE"): {**MANAGE_WEBHOOKS, "project": 204, "staff_session": 204},
    ("webhook-detail", "OPTIONS"): row(**dict.fromkeys(LIVE, 405)),
    ("webhook-rotate-secret", "POST"): {**MANAGE_WEBHOOKS, "project": 201, "staff_session": 201},
    ("webhook-rotate-secret", "OPTIONS"): row(**dict.fromkeys(LIVE, 405)),
    ("webhook-deliveries", "GET"): MANAGE_WEBHOOKS,
    ("webhook-deliveries", "OPTIONS"): row(**dict.fromkeys(LIVE, 405)),
    ("artifact-list", "GET"): READ_BUILD,
    ("artifact-list", "OPTIONS"): OPTIONS_AUTHENTICATED,
    ("artifact", "GET"): {**READ_BUILD, "derived_prefix": 404},  # dist/ is outside docs/
    ("artifact", "PUT"): row(
        running_build=200,  # the same bytes again: idempotent
        finished_build=403,
        other_build=404,
        other_project=403,
        derived_read_only=403,
        derived_prefix=403,  # outside its prefix
        deploy_current=403,
        deploy_in_grace=403,
        project=403,
        staff_session=401,
    ),
    ("artifact", "OPTIONS"): OPTIONS_AUTHENTICATED,
    # The batch URL is also the path of an artifact named "batch" (none here: 404 where readable);
    # POST sends a tar holding dist/app.txt with the bytes it already has.
    ("artifact-batch", "GET"): {
        **READ_BUILD,
        **dict.fromkeys(
            ["running_build", "finished_build", "derived_read_only", "deploy_current"], 404
        ),
        "derived_prefix": 404,
        "deploy_in_grace": 404,
    },
    ("artifact-batch", "PUT"): row(
        running_build=201,  # an artifact named "batch"
        finished_build=403,
        other_build=404,
        other_project=403,
        derived_read_only=403,
        derived_prefix=403,  # outside its prefix
        deploy_current=403,
        deploy_in_grace=403,
        project=403,
        staff_session=401,
    ),
    ("artifact-batch", "POST"): row(
        running_build=200,  # the same file with the same bytes again: idempotent
        finished_build=403,
        other_build=404,
        other_project=403,
        derived_read_only=403,
        derived_prefix=403,  # dist/app.txt is outside docs/
        deploy_current=403,
        deploy_in_grace=403,
        project=403,
        staff_session=401,
    ),
    ("artifact-batch", "OPTIONS"): OPTIONS_AUTHENTICATED,
    # Every share mints its own read-only key on the caller's behalf (no keys:mint needed);
    # a prefix-limited key shares its prefix (here: an empty docs/).
    ("build-share", "POST"): row(
        running_build=201,
        finished_build=201,
        other_build=404,
        other_project=403,
        derived_read_only=201,
        derived_prefix=201,
        deploy_current=201,
        deploy_in_grace=201,
        project=403,
        staff_session=401,
    ),
    ("build-share", "OPTIONS"): OPTIONS_AUTHENTICATED,
    # Signed links ignore credentials: without a signature, every caller gets 403.
    ("signed-link", "GET"): same_for_all(403),
}

# --- endpoints, from the URLconf -----------------------------------------------------------------

SKIPPED_PREFIXES = ("admin/",)  # the Django admin: session + CSRF + its own permissions


def _walk(patterns, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def _methods(pattern: URLPattern) -> list[str]:
    view = getattr(pattern.callback, "view_class", None)
    if view is None:  # a plain function view
        return ["GET"]
    methods = [
        m.upper() for m in view.http_method_names if m not in ("head", "trace") and hasattr(view, m)
    ]
    return methods + (["HEAD"] if "GET" in methods else [])


def endpoints() -> list[tuple[str, str, URLPattern]]:
    found = []
    for route, pattern in _walk(get_resolver().url_patterns):
        if route.startswith(SKIPPED_PREFIXES):
            continue
        assert pattern.name, f"route {route!r} needs a name to have a row in EXPECTED"
        found += [(pattern.name, method, pattern) for method in _methods(pattern)]
    return found


ENDPOINTS = endpoints()


def expected_for(name: str, method: str) -> dict[str, int] | None:
    # HEAD answers like GET.
    return EXPECTED.get((name, "GET" if method == "HEAD" else method))


# --- the world each case runs in ---------------------------------------------------------------

ARTIFACT = "dist/app.txt"
PROJECT_KEY_SCOPES = (Scope.BUILDS_CREATE, Scope.TOKENS_MANAGE, Scope.WEBHOOKS_MANAGE)
ARTIFACT_BYTES = b"hello, downstream\n"


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


class World:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.project = make_project(slug="app", deploy_tokens_enabled=True)
        self.project_token = make_project_key(self.project, scopes=PROJECT_KEY_SCOPES)
        self.build = make_build(self.project, ref="refs/heads/main", commit="a" * 40)
        response = api.as_key(self.build.token).put(
            f"/api/v1/builds/{self.build.build.pk}/artifacts/{ARTIFACT}",
            ARTIFACT_BYTES,
            content_type="text/plain",
        )
        assert response.status_code == 201, response.content
        self.victim, _ = key_derive(parent=self.build.key, scopes=[Scope.ARTIFACTS_READ])
        self.subscription = subscription_create(
            project=self.project, url="https://ci.example/hook", events=["build.succeeded"]
        ).subscription

    def derive(self, scopes, parent=None, **fields) -> tuple[ApiKey, str]:
        return key_derive(parent=parent or self.build.key, scopes=scopes, **fields)

    def client(self, state: str, monkeypatch) -> Api:
        """An API client presenting ``state``'s credential."""
        token = None
        match state:
            case "none":
                pass
            case "malformed":
                return self._header("Bearer not-a-token")
            case "bad_checksum":
                token = self.build.token[:-1] + ("A" if self.build.token[-1] != "A" else "B")
            case "expired":
                key, token = self.derive(list(self.build.key.scopes))
                ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now())
            case "revoked":
                key, token = self.derive(list(self.build.key.scopes))
                key_revoke(key=key, reason="matrix", actor="test")
            case "revoked_parent":
                parent, _ = self.derive(list(self.build.key.scopes))
                _, token = self.derive(list(self.build.key.scopes), parent=parent)
                # Only the parent is marked (as if the child was committed in a race with the
                # cascade): the ancestor check alone must refuse the child.
                ApiKey.objects.filter(pk=parent.pk).update(revoked_at=timezone.now())
            case "past_grace" | "deploy_in_grace":
                _, token = deploy_token_current(project=self.project)
                deploy_token_rotate(project=self.project, actor="test")
                if state == "past_grace":
                    grace = self.settings_grace()
                    moved = timezone.now() + timedelta(seconds=grace + 1)
                    monkeypatch.setattr(timezone, "now", lambda: moved)
            case "running_build":
                token = self.build.token
            case "finished_build":
                build_finish(build=self.build.build, state="succeeded")
                token = self.build.token
            case "other_build":
                token = make_build(self.project, ref="refs/heads/other").token
            case "other_project":
                other = make_project(slug="elsewhere", deploy_tokens_enabled=True)
                token = make_project_key(other, scopes=PROJECT_KEY_SCOPES)
            case "derived_read_only":
                _, token = self.derive([Scope.ARTIFACTS_READ])
            case "derived_prefix":
                _, token = self.derive(
                    [Scope.ARTIFACTS_READ, Scope.ARTIFACTS_WRITE, Scope.KEYS_MINT],
                    path_prefix="docs/",
                )
            case "deploy_current":
                _, token = deploy_token_current(project=self.project)
            case "project":
                token = self.project_token
            case "staff_session":
                user = get_user_model().objects.create_user(
                    username="staff", password="a long enough password 1", is_staff=True
                )
                client = Api()
                client.force_login(user)
                return client
            case _:
                raise AssertionError(f"unknown credential state {state}")
        return self.api.as_key(token)

    def _header(self, value: str) -> Api:
        client = Api()
        client.credentials(HTTP_AUTHORIZATION=value)
        return client

    @staticmethod
    def settings_grace() -> int:
        from django.conf import settings

        return settings.DEPLOY_TOKEN_ROTATION_GRACE_SECONDS

    def url(self, pattern: URLPattern) -> str:
        values = {
            "project_slug": "app",
            "build_id": self.build.build.pk,
            "key_id": self.victim.pk,
            "subscription_id": self.subscription.pk,
            "artifact_path": ARTIFACT,
            "rest": ARTIFACT,
        }
        wanted = pattern.pattern.regex.groupindex
        return reverse(pattern.name, kwargs={k: v for k, v in values.items() if k in wanted})

    def request(self, client: Api, method: str, name: str, url: str):
        if name == "artifact-batch" and method == "POST":
            return client.post(
                url, _tar({ARTIFACT: ARTIFACT_BYTES}), content_type="application/x-tar"
            )
        if method == "PUT":
            return client.put(url, ARTIFACT_BYTES, content_type="text/plain")
        body = {
            "build-create": {"ref": "refs/heads/main", "commit": "abc"},
            "build-finish": {"state": "succeeded"},
            "key-derive": {"scopes": ["artifacts:read"], "expires_in": 60},
            "build-share": {"expires_in": 60},
            "build-statuses": {"context": "downstream/tests", "state": "success"},
            "webhook-list": {"url": "https://ci.example/new", "events": ["build.failed"]},
        }.get(name, {})
        if method == "POST":
            return client.post(url, body, format="json")
        return client.generic(method, url)


# --- the matrix --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize(
    "name, method, pattern",
    ENDPOINTS,
    ids=[f"{method} {name}" for name, method, _ in ENDPOINTS],
)
def test_authorization_matrix(api, monkeypatch, name, method, pattern, state):
    expected = expected_for(name, method)
    if expected is None:
        pytest.fail(f"{method} {name} has no row in EXPECTED: state who may call it")
    world = World(api)
    url = world.url(pattern)
    client = world.client(state, monkeypatch)
    response = world.request(client, method, name, url)
    status = response.status_code
    assert status < 500, f"{method} {url} with {state}: server error {status}"
    if status < 400 <= expected[state]:
        pytest.fail(f"UNEXPECTED ALLOW: {method} {url} with {state} answered {status}")
    assert status == expected[state], (
        f"{method} {url} with {state}: expected {expected[state]}, got {status} "
        f"{response.content[:200]!r}"
    )


def test_every_row_in_the_table_is_a_real_endpoint():
    """Rows for endpoints that no longer exist would hide a typo in a name."""
    real = {(name, method) for name, method, _ in ENDPOINTS}
    assert set(EXPECTED) - real == set()


def test_every_live_row_states_each_credential():
    for endpoint, expected in EXPECTED.items():
        assert set(expected) == set(STATES), endpoint
