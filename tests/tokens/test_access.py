"""tokens/access.py on its own: each layer of confinement (project, build, ref pattern, path
prefix) checked alone, so that losing any one of them fails a test even where another layer
would have hidden it in an end-to-end request."""

import re

import pytest
from django.contrib.auth import get_user_model

from artifacts.models import Artifact
from builds.models import Build, Project
from devtools.factories import make_build, make_project
from tokens import access
from tokens.models import ApiKey
from tokens.services import key_derive, key_mint_project

pytestmark = pytest.mark.django_db


def matches(pattern: str, ref: str) -> bool:
    return re.search(access.glob_to_regex(pattern), ref) is not None


@pytest.mark.parametrize(
    ("pattern", "ref", "expected"),
    [
        ("refs/tags/*", "refs/tags/v1", True),
        ("refs/tags/*", "refs/tags/", True),
        ("refs/tags/*", "refs/heads/x/refs/tags/v1", False),  # anchored at the start
        ("refs/tags/v1", "refs/tags/v10", False),  # anchored at the end
        ("refs/tags/v1", "refs/tags/v1\n", False),  # "$" would match before a newline
        ("refs/tags/v1", "xrefs/tags/v1", False),
        ("refs/tags/v?", "refs/tags/v1", True),
        ("refs/tags/v?", "refs/tags/v10", False),
        ("refs/tags/v1.0", "refs/tags/v1x0", False),  # "." is literal
        ("refs/tags/v+1", "refs/tags/vv1", False),  # "+" is literal
    ],
)
def test_a_ref_glob_matches_the_whole_ref(pattern, ref, expected):
    assert matches(pattern, ref) is expected


@pytest.mark.parametrize("pattern", ["refs/tags/*", "refs/heads/main", "v?.*", "a@b+c-d_e"])
def test_usable_ref_globs_are_accepted(pattern):
    assert access.ref_pattern_validate(pattern) == pattern


@pytest.mark.parametrize("pattern", ["", "refs/[a-z]*", "refs/(x)", "a" * 256, "é", "a b", "^a$"])
def test_ref_globs_outside_the_alphabet_are_refused(pattern):
    with pytest.raises(ValueError) as refused:
        access.ref_pattern_validate(pattern)
    # What the API answers (400 detail): what is allowed, with an example.
    assert str(refused.value) == (
        "Use a ref glob of letters, digits and . _ / @ + -, with * and ? as wildcards "
        "(at most 255 characters), e.g. refs/tags/*."
    )


@pytest.mark.parametrize(("prefix", "expected"), [("dist", "dist/"), ("dist/", "dist/")])
def test_a_path_prefix_is_a_directory(prefix, expected):
    assert access.path_prefix_validate(prefix) == expected


@pytest.mark.parametrize("prefix", ["/etc", "../x", "a/../b", "a\\b", "a\x00b"])
def test_escaping_path_prefixes_are_refused(prefix):
    with pytest.raises(ValueError) as refused:
        access.path_prefix_validate(prefix)
    # The reason is the path policy's, in a sentence about the prefix.
    assert str(refused.value).startswith("A path prefix ") and len(str(refused.value)) > 20


def test_a_path_prefix_has_at_most_512_characters():
    segments = "/".join(["a" * 100] * 5)  # 504 characters
    longest = segments + "/abcdef/"  # 512
    assert access.path_prefix_validate(longest) == longest
    assert access.path_prefix_validate(longest[:-1]) == longest  # the "/" it gains counts
    with pytest.raises(ValueError) as refused:
        access.path_prefix_validate(segments + "/abcdefg")
    assert str(refused.value) == "A path prefix has at most 512 characters."


@pytest.mark.parametrize(
    ("prefix", "path", "allowed"),
    [
        ("", "anything/at/all", True),
        ("dist/", "dist/app.txt", True),
        ("dist/", "dist-private/app.txt", False),
        ("dist/", "DIST/app.txt", False),
        ("dist/", "dis", False),
        ("dist/app/", "dist/other.txt", False),
    ],
)
def test_path_allowed(prefix, path, allowed):
    assert access.path_allowed(ApiKey(path_prefix=prefix), path) is allowed


# --- confinement layers, each alone -------------------------------------------------------


def key(**fields) -> ApiKey:
    """An unsaved key with exactly the bindings given: access.py reads only these fields."""
    return ApiKey(kind=ApiKey.Kind.DERIVED, **fields)


@pytest.fixture
def world(db):
    """Two projects; project one has builds on two refs, each with artifacts."""
    one, two = make_project(slug="one"), make_project(slug="two")
    builds = {
        "main": make_build(one, ref="refs/heads/main").build,
        "tag": make_build(one, ref="refs/tags/v1").build,
        "nested": make_build(one, ref="refs/heads/x/refs/tags/v1").build,
        "elsewhere": make_build(two, ref="refs/tags/v1").build,
    }
    from artifacts.models import Blob

    blob = Blob.objects.create(sha256="0" * 64, size=1)
    for build in builds.values():
        for path in ("dist/a.txt", "DIST/b.txt", "dist-private/c.txt", "docs/d.txt"):
            Artifact.objects.create(build=build, path=path, blob=blob)
    return one, two, builds


def builds_seen(k: ApiKey, builds: dict) -> set[str]:
    return {name for name, b in builds.items() if access.visible_build(Build.objects, k, b.pk)}


def artifacts_seen(k: ApiKey, builds: dict) -> set[tuple[str, str]]:
    names = {b.pk: name for name, b in builds.items()}
    rows = access.visible_artifacts(Artifact.objects.all(), k)
    return {(names[a.build_id], a.path) for a in rows}


def test_the_project_layer_alone(world):
    one, _, builds = world
    k = key(project_id=one.pk)
    assert builds_seen(k, builds) == {"main", "tag", "nested"}
    assert {name for name, _ in artifacts_seen(k, builds)} == {"main", "tag", "nested"}


def test_the_build_layer_alone(world):
    one, _, builds = world
    k = key(project_id=one.pk, build_id=builds["tag"].pk)
    assert builds_seen(k, builds) == {"tag"}
    assert {name for name, _ in artifacts_seen(k, builds)} == {"tag"}


def test_the_build_layer_holds_even_with_a_wrong_project(world):
    _, two, builds = world
    # A (never minted) key claiming project two but bound to a build of project one sees no
    # artifacts: both layers must agree.
    k = key(project_id=two.pk, build_id=builds["tag"].pk)
    assert artifacts_seen(k, builds) == set()


def test_the_ref_pattern_layer_alone(world):
    one, _, builds = world
    k = key(project_id=one.pk, ref_pattern="refs/tags/*")
    assert builds_seen(k, builds) == {"tag"}  # not the nested ref, not the other project
    assert {name for name, _ in artifacts_seen(k, builds)} == {"tag"}
    exact = key(project_id=one.pk, ref_pattern="refs/tags/v")
    assert builds_seen(exact, builds) == set()


def test_the_path_prefix_layer_alone(world):
    one, _, builds = world
    k = key(project_id=one.pk, build_id=builds["main"].pk, path_prefix="dist/")
    assert artifacts_seen(k, builds) == {("main", "dist/a.txt")}


def test_under_prefix_compares_bytes_not_case(world):
    rows = access.under_prefix(Artifact.objects.filter(build=world[2]["main"]), "dist")
    assert sorted(rows.values_list("path", flat=True)) == ["dist-private/c.txt", "dist/a.txt"]
    assert access.under_prefix(Artifact.objects.all(), "").count() == Artifact.objects.count()


def test_visible_projects_is_the_keys_own(world):
    _, two, _ = world
    assert list(access.visible_projects(Project.objects.all(), key(project_id=two.pk))) == [two]


def test_manageable_projects(world):
    one, _, _ = world
    users = get_user_model().objects
    staff = users.create_user("staff", is_staff=True)
    plain = users.create_user("plain")
    gone = users.create_user("gone", is_staff=True, is_active=False)
    everything = set(Project.objects.all())
    qs = Project.objects.all()
    assert set(access.manageable_projects(qs, key=key(project_id=one.pk), user=None)) == {one}
    assert set(access.manageable_projects(qs, key=None, user=staff)) == everything
    assert not access.manageable_projects(qs, key=None, user=plain).exists()
    assert not access.manageable_projects(qs, key=None, user=gone).exists()
    assert not access.manageable_projects(qs, key=None, user=None).exists()


def test_revocable_keys_are_the_key_and_its_descendants_only(build, other_build):
    child, _ = key_derive(parent=build.key, scopes=["artifacts:read", "keys:mint"])
    grandchild, _ = key_derive(parent=child, scopes=["artifacts:read"])
    sibling, _ = key_derive(parent=build.key, scopes=["artifacts:read"])
    revocable = set(access.revocable_keys(ApiKey.objects.all(), child))
    assert revocable == {child, grandchild}
    assert build.key not in revocable and sibling not in revocable
    assert other_build.key not in set(access.revocable_keys(ApiKey.objects.all(), build.key))


def test_only_tokens_manage_reaches_the_projects_deploy_tokens(project, build):
    from tokens.services import deploy_token_current

    Project.objects.filter(pk=project.pk).update(deploy_tokens_enabled=True)
    project.refresh_from_db()
    deploy, _ = deploy_token_current(project=project)
    manager, _ = key_mint_project(project=project, scopes=["builds:create", "tokens:manage"])
    creator, _ = key_mint_project(project=project, scopes=["builds:create"])
    other_manager, _ = key_mint_project(
        project=make_project(slug="other"), scopes=["builds:create", "tokens:manage"]
    )
    from_build, _ = key_derive(parent=build.key, scopes=["artifacts:read"])
    reach = set(access.revocable_keys(ApiKey.objects.all(), manager))
    assert deploy in reach
    assert manager in reach  # still itself, besides the deploy tokens
    assert build.key not in reach
    assert from_build not in reach  # derived, but bound to a build: not the project's
    assert creator not in reach  # another project key, bound to no build either
    assert deploy not in set(access.revocable_keys(ApiKey.objects.all(), creator))
    assert deploy not in set(access.revocable_keys(ApiKey.objects.all(), other_manager))


def test_unknown_scopes_are_named_in_the_refusal():
    from tokens.scopes import Scope, parse_scopes

    assert parse_scopes(["artifacts:read"]) == frozenset({Scope.ARTIFACTS_READ})
    with pytest.raises(ValueError) as refused:
        parse_scopes(["nope", "artifacts:read", "bogus"])
    assert str(refused.value) == "unknown scope(s): bogus, nope"


def test_the_build_filter_on_builds_themselves(world):
    # visible_build answers a build-bound key without it; the filter still holds on its own.
    one, _, builds = world
    k = key(project_id=one.pk, build_id=builds["tag"].pk)
    assert list(Build.objects.filter(access._build_filter(k, ""))) == [builds["tag"]]
