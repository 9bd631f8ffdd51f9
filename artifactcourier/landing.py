"""``GET /``: what this service is and where to go from here. One self-contained page (no
external stylesheet, script, font or image), so it renders on a network without a CDN."""

from django.http import HttpResponse
from django.views.decorators.http import require_safe

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>artifactcourier</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto;
       padding: 0 1rem; line-height: 1.5; color: #222; }
code { background: #f2f2f2; padding: 0 .2rem; }
li { margin: .3rem 0; }
</style>
</head>
<body>
<h1>artifactcourier</h1>
<p>Artifact storage for CI. Every build gets its own key, bound to that build alone and
read-only once the build finishes; builds hand downstream jobs narrower keys and pre-signed
links.</p>
<ul>
<li><a href="/api/docs/">API documentation</a> (the OpenAPI schema:
<a href="/api/schema/">/api/schema/</a>)</li>
<li><a href="/admin/">Admin</a> (projects, builds, keys, audit)</li>
<li><a href="/healthz">Health</a></li>
</ul>
<p>Clients authenticate with <code>Authorization: Bearer &lt;key&gt;</code>.</p>
</body>
</html>
"""


@require_safe
def landing(request):
    return HttpResponse(PAGE, content_type="text/html; charset=utf-8")
