"""`courier`: the artifactcourier command line, for CI jobs and people. A client of the HTTP
API only."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import requests

from . import __version__
from .client import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    ApiError,
    Client,
    Config,
    CourierError,
    UsageError,
    log_line,
    printable,
    redact,
)
from .output import human_size, reporter

EPILOG = """\
configuration (the CI way):
  COURIER_URL     the service, e.g. https://courier.example.com
  COURIER_TOKEN   the key; keep it in your CI's secret store. Avoid --token: a command line
                  ends up in shell history and process lists (use --token-file - to pipe it).
  COURIER_BUILD   the build that upload, download --build, share, finish and status act on
                  (set by `courier build start --format env`)

exit codes:
  0  success
  1  failure (a transfer failed, a checksum did not match, the service is unreachable, ...)
  2  usage error (bad arguments, no such local file)
  3  authentication or permission refused (HTTP 401/403)
  4  not found (HTTP 404: unknown build or artifact, or one the key may not see)

`courier COMMAND --help` describes each command. Docs: docs/ci.md.
"""

TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_.~+/=-]{8,512}\Z")


def _jobs(value: str) -> int:
    n = int(value)
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError("between 1 and 64")
    return n


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 1 <= seconds <= 86400:
        raise argparse.ArgumentTypeError("between 1 and 86400 seconds")
    return seconds


def parse_duration(value: str) -> int:
    """`90`, `90s`, `15m`, `2h`, `7d` -> seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value or "")
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration (like 90s, 15m, 2h, 7d): {value!r}")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection")
    g.add_argument("--url", help="service URL (default: $COURIER_URL)")
    g.add_argument(
        "--token-file",
        metavar="FILE",
        help="read the key from FILE ('-' for stdin) instead of $COURIER_TOKEN",
    )
    g.add_argument("--token", help=argparse.SUPPRESS)  # works, never advertised: see EPILOG
    g.add_argument(
        "--retries",
        type=int,
        default=int(os.environ.get("COURIER_RETRIES", "4")),
        help="retries on connection errors and 5xx, with backoff (default: 4)",
    )
    g.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="seconds without an answer, or moving less than 32 KiB, before a request counts"
        " as stalled (default: 60)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    parser = argparse.ArgumentParser(
        prog="courier",
        description="Store CI build artifacts in artifactcourier and hand them downstream.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"courier {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name, help_text, **kwargs):
        return sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=kwargs.pop("description", help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )

    def build_arg(p, required_help="the build (default: $COURIER_BUILD)"):
        p.add_argument("--build", default=os.environ.get("COURIER_BUILD"), help=required_help)

    p = command("whoami", "show what the key is: kind, build, scopes, expiry")
    p.set_defaults(func=cmd_whoami)

    p = command("build", "start or finish a build")
    build_sub = p.add_subparsers(dest="build_command", metavar="ACTION")
    build_sub.required = True
    start = build_sub.add_parser(
        "start",
        parents=[common],
        help="start a build (project key)",
        description=(
            "Start a build with a project key. Prints the build; --format env prints lines a\n"
            "CI job appends to its environment (COURIER_BUILD, COURIER_TOKEN = the build's\n"
            "key, COURIER_DEPLOY_TOKEN when the project hands one out). On GitHub Actions\n"
            "each secret is also masked (::add-mask::, on stderr)."
        ),
        epilog=(
            "example (GitHub Actions):\n"
            '  courier build start --project app --ref "$GITHUB_REF" --commit "$GITHUB_SHA"'
            ' \\\n      --format env >> "$GITHUB_ENV"'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument("--project", required=True, help="project slug")
    start.add_argument("--ref", required=True, help="e.g. refs/heads/main")
    start.add_argument("--commit", required=True, help="the commit SHA")
    start.add_argument(
        "--untrusted",
        action="store_true",
        help="a fork or pull request build: no key minting, no deploy token, no webhooks",
    )
    start.add_argument("--metadata", help="a JSON object stored with the build")
    start.add_argument(
        "--format",
        choices=["text", "env", "json"],
        default="text",
        help="text (no secrets shown), env (KEY=value lines, secrets included), json",
    )
    start.set_defaults(func=cmd_build_start)
    finish = build_sub.add_parser(
        "finish",
        parents=[common],
        help="finish the build (its key becomes read-only)",
        description="Finish the build. From then on its key reads but no longer writes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build_arg(finish)
    finish.add_argument(
        "--state", required=True, choices=["succeeded", "failed", "canceled"], help="outcome"
    )
    finish.set_defaults(func=cmd_build_finish)
    show = build_sub.add_parser("show", parents=[common], help="show a build and its statuses")
    build_arg(show)
    show.set_defaults(func=cmd_build_show)

    p = command(
        "upload",
        "upload files, directories (recursively) and globs to the build",
        epilog=(
            "A file goes up under its own name, a directory's files under their paths relative\n"
            "to it (not its hidden ones, .git or .env, without --include-hidden), both below\n"
            "--prefix. Files the build already holds with the same SHA-256\n"
            "are skipped, so a re-run after a failure sends only what is missing.\n\n"
            "example:\n  courier upload dist/ --prefix dist/\n  courier upload 'out/*.whl'"
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, directory or glob")
    p.add_argument("--prefix", default="", help="path prefix in the build, e.g. dist/")
    build_arg(p)
    _transfer_options(p)
    p.add_argument(
        "--no-batch",
        action="store_true",
        help="one request per file, even for many small files (default: tar batches)",
    )
    p.add_argument(
        "--include-hidden",
        action="store_true",
        help="also the hidden files and directories (.git, .env, ...) inside a directory"
        " (default: left out; a hidden file named explicitly always goes up)",
    )
    p.set_defaults(func=cmd_upload)

    p = command(
        "download",
        "download a build's artifacts, or everything behind a pre-signed link",
        epilog=(
            "With --build (and a key): the build's artifacts, optionally under --prefix.\n"
            "With LINK (no key needed): a file link, or a share listing link (all its files).\n"
            "Paths are kept relative to --output; a path that would leave it is refused.\n"
            "Every file is verified against the server's SHA-256 before it is put in place;\n"
            "an interrupted download resumes where it stopped when run again.\n\n"
            'examples:\n  courier download --build "$COURIER_BUILD" --prefix dist/ -o artifacts\n'
            '  courier download "$LISTING_URL" -o artifacts'
        ),
    )
    p.add_argument("link", nargs="?", metavar="LINK", help="a pre-signed file or listing URL")
    p.add_argument("--build", help="download from this build (with $COURIER_TOKEN)")
    p.add_argument("--prefix", default="", help="only artifacts under this prefix")
    p.add_argument("-o", "--output", default=".", help="target directory (default: .)")
    _transfer_options(p)
    p.set_defaults(func=cmd_download)

    p = command(
        "share",
        "pre-signed links to the build's artifacts (listing + one per file)",
        epilog="example:\n  courier share --prefix dist/ --expires 2h --json",
    )
    build_arg(p)
    p.add_argument("--paths", nargs="+", metavar="PATH", help="only these artifacts")
    p.add_argument("--prefix", help="only artifacts under this prefix")
    p.add_argument(
        "--expires", type=parse_duration, default=parse_duration("2h"), help="e.g. 30m, 2h, 7d"
    )
    p.set_defaults(func=cmd_share)

    p = command("revoke", "revoke a key (and every key derived from it), e.g. a share's key")
    p.add_argument("key_id", metavar="KEY_ID", type=int)
    p.set_defaults(func=cmd_revoke)

    p = command("key", "derive narrower keys")
    key_sub = p.add_subparsers(dest="key_command", metavar="ACTION")
    key_sub.required = True
    derive = key_sub.add_parser(
        "derive",
        parents=[common],
        help="derive a narrower key from the current one",
        description=(
            "Derive a key with a subset of the current key's scopes, expiring no later,\n"
            "optionally limited to a path prefix. Prints the new key once."
        ),
        epilog="example:\n  courier key derive --scopes artifacts:read --expires 1h --prefix dist/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    derive.add_argument(
        "--scopes", nargs="+", help="scopes (space or comma separated); default: the caller's"
    )
    derive.add_argument("--expires", type=parse_duration, required=True, help="e.g. 1h, 7d")
    derive.add_argument("--prefix", help="limit the key to paths under this prefix")
    derive.add_argument("--name", default="", help="a label for the key")
    derive.add_argument("--format", choices=["text", "env", "json"], default="text")
    derive.add_argument(
        "--env-name", default="COURIER_TOKEN", help="variable name for --format env"
    )
    derive.set_defaults(func=cmd_key_derive)

    p = command(
        "status",
        "report a downstream job's status on the build (with a webhook's status_token)",
        epilog=(
            "example (a downstream job):\n"
            '  COURIER_TOKEN=$STATUS_TOKEN courier status --build "$BUILD_ID" \\\n'
            '      --context downstream/tests --state success --target-url "$JOB_URL"'
        ),
    )
    build_arg(p)
    p.add_argument("--context", required=True, help="e.g. downstream/app-tests")
    p.add_argument("--state", required=True, choices=["pending", "success", "failure", "error"])
    p.add_argument("--description", help="a short sentence")
    p.add_argument("--target-url", help="where the job's details are")
    p.set_defaults(func=cmd_status)
    return parser


def _transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=int(os.environ.get("COURIER_JOBS", "4")),
        help="parallel transfers (default: 4, or $COURIER_JOBS)",
    )
    p.add_argument(
        "--progress",
        choices=["auto", "bars", "lines", "none"],
        default="auto",
        help="bars on a terminal, one line per file otherwise (default: auto)",
    )


# -- helpers ------------------------------------------------------------------------------


def make_client(args) -> Client:
    url = args.url or os.environ.get("COURIER_URL", "")
    token = args.token
    if args.token_file:
        try:
            if args.token_file == "-":  # noqa: S105 (stdin, not a password)
                token = sys.stdin.readline().strip()
            else:
                token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file: {exc.strerror}") from None
    if not token:
        token = os.environ.get("COURIER_TOKEN", "").strip() or None
    return Client(Config(url=url, token=token, retries=max(args.retries, 0), timeout=args.timeout))


def require_build(args) -> str:
    if not args.build:
        raise UsageError("which build? pass --build or set COURIER_BUILD")
    if not str(args.build).isdigit():
        raise UsageError(f"a build is a number, not {printable(args.build)!r}")
    return str(args.build)


def emit_json(data) -> None:
    """One JSON document. Characters a terminal or a log would act on (escapes, bidi
    overrides, U+2028...) only ever sit inside strings: written as \\u escapes there."""
    text = redact(json.dumps(data, indent=2, ensure_ascii=False))
    safe = "".join(ch if ch.isprintable() or ch in " \n" else json.dumps(ch)[1:-1] for ch in text)
    sys.stdout.write(safe + "\n")


def say(text: str = "") -> None:
    sys.stdout.write(log_line(text) + "\n")


def secret_value(value: object) -> str:
    """A secret the service handed out, checked before it goes into an env file: a value
    with a newline could add variables of its own (a hostile or broken server)."""
    if not isinstance(value, str) or not TOKEN_SHAPE.match(value):
        raise CourierError("the service answered a token in an unexpected shape")
    return value


def mask(*secrets: str) -> None:
    """GitHub Actions masks a value in the job's log once told so (workflow command
    `add-mask`); the runner reads commands from stderr too, which keeps stdout for the
    env lines that go to $GITHUB_ENV."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for secret in secrets:
            sys.stderr.write(f"::add-mask::{secret}\n")
        sys.stderr.flush()


def link_signatures(links: list) -> list[str]:
    """The `sig` of each pre-signed link (its credential: masked in a GitHub Actions log, the
    link's other parts stay readable). Only values of a token's shape: a `sig` holding a
    newline would write workflow commands of its own."""
    sigs = []
    for link in links:
        if isinstance(link, str):
            for value in parse_qs(urlsplit(link).query).get("sig", []):
                if TOKEN_SHAPE.match(value) and value not in sigs:
                    sigs.append(value)
    return sigs


def env_line(name: str, value: object) -> str:
    text = str(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise CourierError(f"refusing a value for {name} that spans lines")
    return f"{name}={text}"


# -- commands -----------------------------------------------------------------------------


def cmd_whoami(args) -> int:
    key = make_client(args).get_json("api/v1/keys/self")
    if args.json:
        emit_json(key)
        return EXIT_OK
    for field in (
        "id",
        "kind",
        "name",
        "state",
        "project",
        "build",
        "scopes",
        "path_prefix",
        "expires_at",
        "parent",
    ):
        if field in key and key[field] not in (None, ""):
            value = key[field]
            if isinstance(value, list):
                value = " ".join(map(str, value))
            say(f"{field + ':':<13}{value}")
    return EXIT_OK


def cmd_build_start(args) -> int:
    payload = {"ref": args.ref, "commit": args.commit, "trusted": not args.untrusted}
    if args.metadata:
        try:
            payload["metadata"] = json.loads(args.metadata)
        except ValueError:
            raise UsageError("--metadata must be a JSON object") from None
    build = make_client(args).post_json(
        f"api/v1/projects/{quote(args.project, safe='')}/builds/", payload
    )
    key = build.get("key") or {}
    secrets = [secret_value(key.get("token"))]
    deploy = build.get("deploy_token") or None
    if deploy:
        secrets.append(secret_value(deploy.get("token")))
    mask(*secrets)
    if args.format == "json" or args.json:
        emit_json(build)
    elif args.format == "env":
        say(env_line("COURIER_BUILD", int(build["id"])))
        say(env_line("COURIER_TOKEN", secrets[0]))
        if deploy:
            say(env_line("COURIER_DEPLOY_TOKEN", secrets[1]))
    else:
        _print_build(build)
        say(f"key:         id {key.get('id')}, scopes {' '.join(key.get('scopes') or [])}")
        sys.stderr.write(
            "note: the build's key is shown once and only with --format env or --json\n"
        )
    return EXIT_OK


def _print_build(build: dict) -> None:
    say(f"build:       {build.get('id')} (#{build.get('number')} of {build.get('project')})")
    for field in ("state", "ref", "commit", "trusted", "created_at", "finished_at"):
        if build.get(field) not in (None, ""):
            say(f"{field + ':':<13}{build[field]}")
    for field in ("artifact_count", "total_size"):
        if field in build:
            value = build[field]
            say(f"{field + ':':<13}{human_size(value) if field == 'total_size' else value}")
    for status in build.get("statuses") or []:
        say(
            f"status:      {status.get('context')} {status.get('state')}"
            f" {status.get('description') or ''}".rstrip()
        )


def cmd_build_finish(args) -> int:
    build_id = require_build(args)
    client = make_client(args)
    try:
        # Retried like a PUT: a second attempt after a lost answer finds the build finished.
        build = client.post_json(
            f"api/v1/builds/{build_id}/finish", {"state": args.state}, idempotent=True
        )
    except ApiError as exc:
        if exc.code != "build_finished":
            raise
        # Finished already: by an attempt whose answer was lost (a proxy's 502, a dropped
        # connection, a re-run CI step), which is done if it set the state asked for now.
        build = client.get_json(f"api/v1/builds/{build_id}/")
        if not isinstance(build, dict) or build.get("state") != args.state:
            state = printable(str(build.get("state") if isinstance(build, dict) else "?"))
            raise CourierError(f"build {build_id} has already finished as {state}") from None
        if not args.json:
            say(f"build {build_id} had already finished as {args.state}")
    if args.json:
        emit_json(build)
    else:
        _print_build(build)
    return EXIT_OK


def cmd_build_show(args) -> int:
    build = make_client(args).get_json(f"api/v1/builds/{require_build(args)}/")
    if args.json:
        emit_json(build)
    else:
        _print_build(build)
    return EXIT_OK


def _summary(outcomes, verb: str, args) -> int:
    failed = [o for o in outcomes if o.status == "failed"]
    if args.json:
        emit_json(
            {
                "ok": not failed,
                "files": [o.as_dict() for o in outcomes],
                "failed": len(failed),
            }
        )
    else:
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        size = sum(o.size for o in outcomes if o.status == verb)
        parts = [f"{n} {status}" for status, n in counts.items()]
        say(
            f"{verb if not failed else 'FAILED'}: {', '.join(parts) or 'nothing'}"
            f" ({human_size(size)} transferred)"
        )
        for o in failed:
            say(f"  failed: {o.__dict__.get('name') or o.__dict__.get('path')}: {o.error}")
    if not failed:
        return EXIT_OK
    # Every file refused (3) or not found (4) alike: that code, as for a single request (a
    # key revoked or expired during the run is the credentials, not the transfer).
    codes = {o.exit_code for o in failed}
    return codes.pop() if len(codes) == 1 else EXIT_FAILURE


def cmd_upload(args) -> int:
    from .upload import upload

    client = make_client(args)
    build_id = require_build(args)
    with reporter(json_output=args.json, progress=args.progress) as rep:
        outcomes = upload(
            client=client,
            build=build_id,
            paths=args.paths,
            prefix=args.prefix,
            jobs=args.jobs,
            reporter=rep,
            batch=not args.no_batch,
            include_hidden=args.include_hidden,
        )
    return _summary(outcomes, "uploaded", args)


def cmd_download(args) -> int:
    from .download import build_remotes, download, link_remotes

    if bool(args.link) == bool(args.build):
        raise UsageError("give either a LINK or --build (not both)")
    client = make_client(args)
    if args.build:
        remotes = build_remotes(client, require_build(args), args.prefix or None)
    else:
        remotes = link_remotes(client, args.link)
        if args.prefix:
            remotes = [r for r in remotes if r.path.startswith(args.prefix)]
    with reporter(json_output=args.json, progress=args.progress) as rep:
        outcomes = download(
            client=client, remotes=remotes, root=Path(args.output), jobs=args.jobs, reporter=rep
        )
    return _summary(outcomes, "downloaded", args)


def cmd_share(args) -> int:
    build_id = require_build(args)
    payload: dict = {"expires_in": args.expires}
    if args.paths:
        payload["paths"] = args.paths
    if args.prefix:
        payload["prefix"] = args.prefix
    share = make_client(args).post_json(f"api/v1/builds/{build_id}/share", payload)
    links = [share.get("url")] + [a.get("url") for a in share.get("artifacts") or []]
    mask(*link_signatures(links))
    if args.json:
        emit_json(share)
        return EXIT_OK
    say(f"listing:  {share.get('url')}")
    say(f"expires:  {share.get('expires_at')}")
    say(f"revoke:   courier revoke {share.get('key_id')}")
    for artifact in share.get("artifacts") or []:
        say(f"{artifact.get('path')}  {artifact.get('url')}")
    return EXIT_OK


def cmd_revoke(args) -> int:
    make_client(args).request("DELETE", f"api/v1/keys/{args.key_id}", expect=(204, 200)).close()
    if args.json:
        emit_json({"revoked": args.key_id})
    else:
        say(f"revoked key {args.key_id} and every key derived from it")
    return EXIT_OK


def cmd_key_derive(args) -> int:
    payload: dict = {"expires_in": args.expires, "name": args.name}
    if args.scopes:
        payload["scopes"] = [s for item in args.scopes for s in item.split(",") if s]
    if args.prefix:
        payload["path_prefix"] = args.prefix
    key = make_client(args).post_json("api/v1/keys/", payload)
    token = secret_value(key.get("token"))
    mask(token)
    if args.format == "json" or args.json:
        emit_json(key)
    elif args.format == "env":
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", args.env_name):
            raise UsageError("--env-name must be an environment variable name")
        say(env_line(args.env_name, token))
    else:
        say(f"id:          {key.get('id')}")
        say(f"scopes:      {' '.join(key.get('scopes') or [])}")
        say(f"expires_at:  {key.get('expires_at')}")
        say(f"token:       {token}")
        sys.stderr.write("note: the token is shown once; revoke it with courier revoke ID\n")
    return EXIT_OK


def cmd_status(args) -> int:
    payload = {"context": args.context, "state": args.state}
    if args.description:
        payload["description"] = args.description
    if args.target_url:
        payload["target_url"] = args.target_url
    status = make_client(args).post_json(f"api/v1/builds/{require_build(args)}/statuses/", payload)
    if args.json:
        emit_json(status)
    else:
        say(f"reported {args.context}: {args.state}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CourierError as exc:
        sys.stderr.write(f"courier: error: {printable(str(exc))}\n")
        return exc.exit_code
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # An answer in a shape the service never sends (a proxy's page, a hostile server):
        # one line, not a traceback with the server's text in it.
        detail = printable(f"{type(exc).__name__}: {exc}")[:200]
        sys.stderr.write(f"courier: error: unexpected answer from the service ({detail})\n")
        return EXIT_FAILURE
    except requests.RequestException as exc:
        # A connection broken while an answer was read, wherever that happened: one line
        # without the URL (a link's query is its credential).
        sys.stderr.write(f"courier: error: the connection failed ({type(exc).__name__})\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("courier: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()

__all__ = ["EXIT_USAGE", "main"]
