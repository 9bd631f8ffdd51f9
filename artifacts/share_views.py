"""Sharing over HTTP: ``POST /api/v1/builds/{id}/share`` and the signed ``/dl/`` links.

``/dl/`` is outside the API: no header is needed, the URL is the credential (``signing.py``).
Nothing here logs a URL with its query: the query holds the signature.
"""

import base64
import hashlib
import posixpath
import shlex
import time
from datetime import UTC, datetime
from itertools import groupby
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from builds.models import Build
from builds.statuses import statuses_latest
from tokens.access import visible_build
from tokens.authentication import client_ip
from tokens.scopes import Scope
from tokens.services import LinkKeyDead, link_check

from . import sharing, signing
from .downloads import signed_artifact_response
from .errors import DependencyUnavailable, InvalidArtifactPath
from .models import Share
from .paths import artifact_path_clean, page_after, page_cursor
from .views import build_for_key


class _PathList(serializers.ListField):
    """Counted before any item is checked: a body of a million paths is refused at once, not
    after a million string validations (seconds of a worker's time for a few megabytes)."""

    def to_internal_value(self, data):
        if isinstance(data, list) and len(data) > settings.SHARE_MAX_PATHS:
            raise serializers.ValidationError(
                f"At most {settings.SHARE_MAX_PATHS} paths per share."
            )
        return super().to_internal_value(data)


class ShareRequestSerializer(serializers.Serializer):
    paths = _PathList(
        child=serializers.CharField(trim_whitespace=False, max_length=1024), required=False
    )
    prefix = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, max_length=512
    )
    expires_in = serializers.IntegerField(required=False, min_value=1)

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(f"Unknown field(s): {', '.join(sorted(unknown))}.")
        return attrs


_ARTIFACT_LINKS = inline_serializer(
    "SharedArtifact",
    many=True,
    fields={
        "path": serializers.CharField(),
        "size": serializers.IntegerField(),
        "sha256": serializers.CharField(),
        "url": serializers.URLField(),
    },
)
_SHARE_ANSWER = inline_serializer(
    "Share",
    {
        "url": serializers.URLField(help_text="Signed listing URL (HTML, or JSON on request)."),
        "expires_at": serializers.DateTimeField(),
        "key_id": serializers.IntegerField(help_text="Revoke this key to withdraw the links."),
        "build": inline_serializer(
            "SharedBuild",
            {
                "id": serializers.IntegerField(),
                "number": serializers.IntegerField(),
                "project": serializers.CharField(),
                "ref": serializers.CharField(),
                "commit": serializers.CharField(),
                "state": serializers.CharField(),
                "finished_at": serializers.DateTimeField(allow_null=True),
            },
        ),
        "artifacts": _ARTIFACT_LINKS,
    },
)


def share_body(*, links: sharing.SharedLinks, key_id: int, build: Build) -> dict:
    """The share API's 201 body, and the listing's JSON: one shape."""
    return {
        "url": links.url,
        "expires_at": links.expires_at.isoformat(),
        "key_id": key_id,
        "build": {
            "id": build.pk,
            "number": build.number,
            "project": build.project.slug,
            "ref": build.ref,
            "commit": build.commit,
            "state": build.state,
            "finished_at": build.finished_at.isoformat() if build.finished_at else None,
        },
        "artifacts": links.artifacts,
    }


class BuildShareView(APIView):
    required_scopes = {Scope.ARTIFACTS_READ}

    @extend_schema(request=ShareRequestSerializer, responses={201: _SHARE_ANSWER})
    def post(self, request, build_id: int):
        build = build_for_key(request, build_id)
        if not isinstance(request.data, dict):
            raise serializers.ValidationError("The body is a JSON object.")
        given = ShareRequestSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        share = sharing.share_create(
            key=request.auth,
            build=build,
            paths=data.get("paths"),
            prefix=data.get("prefix"),
            expires_in=data.get("expires_in"),
            ip=client_ip(request),
            base_url=settings.PUBLIC_BASE_URL,
        )
        body = share_body(links=share.links, key_id=share.key_id, build=build)
        return Response(body, status=status.HTTP_201_CREATED)


# --- /dl/ ------------------------------------------------------------------------------------


def _refused(code: str, message: str, status: int = 403) -> JsonResponse:
    response = JsonResponse({"detail": message, "code": code}, status=status)
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


class _Refusal(Exception):
    def __init__(self, code: str, message: str, status: int = 403) -> None:
        self.code, self.message, self.status = code, message, status


def _wants_json(request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _build_for(key, build_id: int) -> Build | None:
    """The build a link names, if its key still reaches it (a share key is bound to its build,
    loaded with the key: no query)."""
    if key.build_id is not None:
        return key.build if key.build_id == build_id else None
    return visible_build(Build.objects.select_related("project"), key, build_id).first()


def _path_or_none(rest: str) -> str | None:
    """The artifact path a link names, cleaned; None if no artifact could have that path."""
    try:
        return artifact_path_clean(rest)
    except InvalidArtifactPath:
        return None


@method_decorator(csrf_exempt, name="dispatch")
class SignedLinkView(View):
    """A signed link: a listing (path ends with ``/``) or one artifact. Anything that does not
    verify is 403 with the reason in ``detail``, never the bytes."""

    http_method_names = ["get", "head"]

    def http_method_not_allowed(self, request, *args, **kwargs):
        return _refused("method_not_allowed", "Signed links answer GET and HEAD only.")

    def get(self, request, build_id: str, rest: str):
        try:
            params = signing.verify(
                method=request.method,
                path=request.path_info,
                query={name: request.GET.get(name) for name in ("exp", "kid", "sig")},
                now=time.time(),
            )
            listing = rest == "" or rest.endswith("/")
            path = None if listing else _path_or_none(rest)
            # One query: the key, its ancestors' state, and the artifact at the path.
            access = link_check(kid=params.kid, build_id=int(build_id), path=path)
            key = access.key
            build = _build_for(key, int(build_id))
            if build is None:
                raise _Refusal("build_gone", "This build no longer exists or is out of reach.")
            if listing:
                return self._listing(request, key=key, build=build, prefix=rest, exp=params.exp)
            # The signature binds the path: only paths the share named were ever signed.
            if access.artifact is None:
                raise _Refusal("artifact_gone", "This artifact no longer exists.")
            return signed_artifact_response(request, access.artifact)
        except signing.LinkInvalid as invalid:
            return _refused(str(invalid.code), invalid.message)
        except LinkKeyDead as dead:
            return _refused(dead.code, dead.message)
        except _Refusal as refusal:
            return _refused(refusal.code, refusal.message, refusal.status)
        except DependencyUnavailable as down:
            response = JsonResponse({"detail": str(down.detail), "code": "unavailable"}, status=503)
            response["Retry-After"] = str(settings.DEPENDENCY_RETRY_AFTER_SECONDS)
            response["Cache-Control"] = "no-store"
            return response

    def _listing(self, request, *, key, build, prefix, exp):
        after = _cursor_read(request.GET.get("cursor"), prefix=prefix)
        share = Share.objects.filter(key=key).only("paths").first()
        paths = share.paths if share is not None and share.paths else None
        # Absolute links from the configured base, never from the request's Host header.
        base_url = settings.PUBLIC_BASE_URL
        found = sharing.shared_artifacts(key=key, build=build, paths=paths, prefix=prefix)
        page, last = sharing.listing_page(found, after=after, size=settings.SHARE_LISTING_PAGE_SIZE)
        url = signing.sign_url(base_url=base_url, path=request.path_info, exp=exp, kid=key.pk)
        links = sharing.SharedLinks(
            url=url,
            artifacts=sharing.sign_artifacts(
                artifacts=page, build_id=build.pk, exp=exp, kid=key.pk, base_url=base_url
            ),
            expires_at=datetime.fromtimestamp(exp, tz=UTC),
        )
        body = share_body(links=links, key_id=key.pk, build=build)
        # The cursor selects a page of what the signature grants; it grants nothing itself, so
        # it is not signed.
        body["next"] = None if last is None else f"{url}&cursor={_cursor_write(last, prefix)}"
        if _wants_json(request):
            response = JsonResponse(body)
        else:
            context = _page_context(body, build, first_page=after is None)
            response = HttpResponse(
                render_to_string("artifacts/share.html", context),
                content_type="text/html; charset=utf-8",
            )
            response["Content-Security-Policy"] = PAGE_CSP
            response["X-Frame-Options"] = "DENY"
        response["Vary"] = "Accept"
        response["Cache-Control"] = "private, no-store"
        response["Referrer-Policy"] = "no-referrer"
        response["X-Robots-Tag"] = "noindex, nofollow"
        response["X-Content-Type-Options"] = "nosniff"
        return response


def _cursor_write(path: str, prefix: str) -> str:
    """The cursor, percent-encoded as in the path of a link: the ``next`` link is then no
    longer than the link to ``path`` itself (plus ``&cursor=``), which every stored path fits
    in a request line (ARTIFACT_PATH_MAX_URL_BYTES)."""
    return quote(page_cursor(path, prefix), safe="/")


def _cursor_read(value: str | None, *, prefix: str) -> str | None:
    """The path a listing page starts after, from the ``cursor`` its ``next`` link carries."""
    if value is None:
        return None
    try:
        return page_after(value, prefix)
    except InvalidArtifactPath:
        raise _Refusal(
            "invalid_cursor",
            "This listing page link is damaged: follow the listing's 'next' link as given.",
            status=400,
        ) from None


# --- The share page --------------------------------------------------------------------------

PAGE_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;"
    "color:#111;background:#fff}"
    "h1{font-size:1.3rem;margin:.2rem 0}h2{font-size:1.05rem;margin:1.2rem 0 .4rem}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;margin:0}"
    "dt{color:#555}dd{margin:0;overflow-wrap:anywhere}"
    "table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .4rem;"
    "border-bottom:1px solid #ddd;vertical-align:top}th{font-weight:600}"
    "tr.dir th{background:#f3f3f3;font-family:ui-monospace,monospace}"
    ".num{text-align:right;white-space:nowrap}code,pre{font-family:ui-monospace,monospace;"
    "font-size:.85em}.sha{overflow-wrap:anywhere;color:#555;font-size:.9em}"
    "pre{background:#f6f6f6;padding:.5rem;overflow-x:auto;white-space:pre-wrap;"
    "overflow-wrap:anywhere;margin:.2rem 0}details{margin:.2rem 0}"
    ".state-success,.state-succeeded{color:#0a6b2a}.state-failure,.state-failed,.state-error"
    "{color:#a11}.warn{background:#fff6d6;padding:.4rem .6rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(PAGE_STYLE.encode()).digest()).decode()
# No script, no external anything: only this page's own inline style block may apply.
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _path_absolute(url: str) -> str:
    """``url`` without its scheme and host: its path and query."""
    parts = urlsplit(url)
    return urlunsplit(("", "", parts.path, parts.query, ""))


def _page_context(body: dict, build: Build, *, first_page: bool) -> dict:
    files = [
        {
            **item,
            "name": posixpath.basename(item["path"]),
            # Path-absolute in the page: it works on whatever host the page was opened through,
            # and keeps PUBLIC_BASE_URL's own path (a service mounted under /courier/).
            "href": _path_absolute(item["url"]),
            "human_size": _human_size(item["size"]),
            "curl": f"curl -fLo {shlex.quote(posixpath.basename(item['path']))} "
            f"{shlex.quote(item['url'])}",
        }
        for item in body["artifacts"]
    ]
    # Grouped by directory, not in path order: that puts "dist/sub/b" between "dist/a" and
    # "dist/z", which would split dist/ in two.
    by_directory = sorted(files, key=lambda f: (posixpath.dirname(f["path"]), f["path"]))
    directories = [
        {"name": directory or "(top level)", "files": list(group)}
        for directory, group in groupby(by_directory, key=lambda f: posixpath.dirname(f["path"]))
    ]
    for directory in directories:
        directory["count"] = len(directory["files"])
        directory["human_size"] = _human_size(sum(f["size"] for f in directory["files"]))
    fetch_all = ""
    fetch_dir = f"{build.project.slug}-{build.number}"
    # One page only: a command built from it would fetch part of the share and call it done.
    paged = body["next"] is not None or not first_page
    if files and not paged:
        # One command: every file into its path (directories created), then sha256sum -c
        # against the checksums this page lists. The paths are the build's to choose (".bashrc",
        # ".git/config", "src/main.c"), so they land in a directory the command creates, never
        # where it is run: mkdir refuses one that exists, and nothing is written over.
        directory = shlex.quote(fetch_dir)
        downloads = " ".join(f"-o {shlex.quote(f['path'])} {shlex.quote(f['url'])}" for f in files)
        sums = " ".join(f"{f['sha256']} {shlex.quote(f['path'])}" for f in files)
        fetch_all = (
            f"mkdir -- {directory} && (cd -- {directory} && curl -fL --create-dirs {downloads}"
            f" && printf '%s  %s\\n' {sums} | sha256sum -c -)"
        )
    return {
        "share": body,
        "build": build,
        # The latest report of every context (builds' one selector), not of the latest N
        # reports: a busy downstream cannot push another's failure off the page.
        "statuses": list(statuses_latest(build=build)),
        "directories": directories,
        "file_count": len(files),
        "paged": paged,
        "next_href": _path_absolute(body["next"]) if body["next"] else "",
        # Every page of the listing, followed by the client (docs/ci.md).
        "courier_all": f"courier download {shlex.quote(body['url'])} -o {shlex.quote(fetch_dir)}",
        "total_size": _human_size(sum(f["size"] for f in files)),
        "fetch_all": fetch_all,
        "fetch_dir": fetch_dir,
        "style": PAGE_STYLE,
        "expires_at": datetime.fromisoformat(body["expires_at"]),
    }
