from datetime import timedelta
from functools import cache
from types import SimpleNamespace

from django.conf import settings
from django.db import connections, models
from django.db.models import Q
from django.utils import timezone

from .scopes import FINISHED_BUILD_KEY_SCOPES, FINISHED_BUILD_REVOKES, READ_ONLY_SCOPES, Scope


class _Prepared:
    """A psycopg cursor whose every execute() is a prepared statement (psycopg keeps one per
    query text and connection, and re-uses it)."""

    def __init__(self, cursor) -> None:
        self._cursor = cursor
        self._query = None

    def execute(self, sql, params=None):
        # What Django's query log reads (last_executed_query): a prepared execution leaves
        # psycopg's own copy of the text empty.
        self._query = SimpleNamespace(query=sql.encode())
        return self._cursor.execute(sql, params, prepare=True)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


def _hot_cursor(connection):
    """A cursor for the lookups every request makes. On PostgreSQL it binds parameters on the
    server and prepares the statement: parsed and planned once per connection, not once per
    request (Django's default sends the whole text with the values inlined every time, and
    switches psycopg's automatic preparing off). Still logged like any query. Behind a
    transaction-mode pooler that cannot keep prepared statements (PgBouncer before 1.21), set
    AUTH_PREPARED_STATEMENTS=false."""
    if connection.vendor == "postgresql" and settings.AUTH_PREPARED_STATEMENTS:
        from django.db.backends.postgresql.base import ServerBindingCursor

        # connection.cursor() would first replace a connection the server dropped
        # (CONN_HEALTH_CHECKS); this is the request's first query, so it must do the same.
        connection.close_if_health_check_failed()
        connection.ensure_connection()
        raw = _Prepared(ServerBindingCursor(connection.connection))
        if connection.queries_logged:
            return connection.make_debug_cursor(raw)
        return connection.make_cursor(raw)
    return connection.cursor()


def _digest_lookup(connection) -> "_DigestLookup":
    return _DigestLookup.for_connection(connection.alias, connection.vendor)


def key_dead_sql(q, alias: str) -> str:
    """SQL: the key row ``alias`` is dead (revoked, or expired at the first ``%s``, now). The
    one condition every ancestor check in SQL uses."""
    revoked = q(ApiKey._meta.get_field("revoked_at").column)
    expires = q(ApiKey._meta.get_field("expires_at").column)
    return f"({alias}.{revoked} IS NOT NULL OR {alias}.{expires} <= %s)"


def key_ancestor_ids_sql(q, alias: str) -> str:
    """PostgreSQL: the ids listed in key row ``alias``'s ``lineage`` ('/3/17/', written once
    when it was derived), as a bigint array; empty for a root key."""
    lineage = q(ApiKey._meta.get_field("lineage").column)
    return f"string_to_array(trim(both '/' from {alias}.{lineage}), '/')::bigint[]"


class RowModels:
    """Several models' columns selected side by side in one row (``sql``, each model under its
    table alias), and such a row turned back into instances with the database converters the
    ORM would apply, looked up once. A model whose primary key is NULL (a LEFT JOIN that found
    nothing) comes back as None."""

    def __init__(self, connection, parts) -> None:
        """``parts``: ``[(model, alias), ...]`` in select order."""
        q = connection.ops.quote_name
        self.models = [model for model, _ in parts]
        fields = [model._meta.concrete_fields for model in self.models]
        self.sql = ", ".join(
            f"{alias}.{q(field.column)}"
            for (_, alias), model_fields in zip(parts, fields, strict=True)
            for field in model_fields
        )
        self.attnames = [[f.attname for f in model_fields] for model_fields in fields]
        self.width = sum(len(names) for names in self.attnames)
        self.converters = []
        for i, field in enumerate(f for model_fields in fields for f in model_fields):
            expression = field.get_col(field.model._meta.db_table)
            found = connection.ops.get_db_converters(expression)
            found += expression.get_db_converters(connection)
            if found:
                self.converters.append((i, found, expression))

    def decode(self, connection, row) -> list:
        values = list(row[: self.width])
        for i, converters, expression in self.converters:
            for converter in converters:
                values[i] = converter(values[i], expression, connection)
        instances, start = [], 0
        for model, attnames in zip(self.models, self.attnames, strict=True):
            chunk = values[start : start + len(attnames)]
            start += len(attnames)
            present = chunk[0] is not None  # the primary key comes first
            instances.append(model.from_db(connection.alias, attnames, chunk) if present else None)
        return instances


def key_attach(key: "ApiKey", build, project) -> "ApiKey":
    """Give ``key`` the build and project loaded with it, so nothing fetches them again."""
    key.project = project
    if key.build_id is not None:
        key.build = build
        build.project = project
    return key


class _DigestLookup:
    """SQL and row decoding for "the key with this digest, its build and its project", prepared
    once.

    This runs on every authenticated request; compiling the equivalent ORM query costs more than
    executing it, so the statement is composed once from the models' metadata (so columns stay
    in step with the models) and the per-column database converters are looked up once. The
    project comes along because effective scopes depend on it (deploy tokens opted out).
    """

    @classmethod
    @cache
    def for_connection(cls, alias: str, vendor: str) -> "_DigestLookup":
        return cls(connections[alias])

    def __init__(self, connection) -> None:
        q = connection.ops.quote_name
        meta = ApiKey._meta
        Build = meta.get_field("build").related_model
        Project = meta.get_field("project").related_model
        self.columns = RowModels(connection, [(ApiKey, "k"), (Build, "b"), (Project, "p")])
        build_id = q(meta.get_field("build").column)
        project_id = q(meta.get_field("project").column)
        table, pk = q(meta.db_table), q(meta.pk.column)
        parent_id, digest = q(meta.get_field("parent").column), q(meta.get_field("digest").column)
        joins = (
            f"FROM {table} k "
            f"INNER JOIN {q(Project._meta.db_table)} p ON p.{q(Project._meta.pk.column)} = "
            f"k.{project_id} "
            f"LEFT JOIN {q(Build._meta.db_table)} b ON b.{q(Build._meta.pk.column)} = k.{build_id} "
            f"WHERE k.{digest} = %s"
        )
        if connection.vendor == "postgresql":
            # The ancestors are the ids in ``lineage``: one primary-key probe per ancestor,
            # planned with the rest. Measured on the server, this executes in a fifth of the
            # time of the recursive walk below (which evaluates the key lookup twice), and a
            # root key skips it (one-time filter).
            ancestors = (
                f"SELECT COUNT(*) FROM {table} a WHERE k.{parent_id} IS NOT NULL "  # noqa: S608
                f"AND a.{pk} = ANY({key_ancestor_ids_sql(q, 'k')}) AND {key_dead_sql(q, 'a')}"
            )
            self.sql = f"SELECT {self.columns.sql}, ({ancestors}) {joins}"
            self.params = lambda now, digest: [now, digest]
        else:
            # The ancestors' state comes with the key in the same round trip: a recursive walk
            # up ``parent`` (primary-key lookups, at most KEY_DERIVE_MAX_DEPTH steps; empty for
            # a root key). SQLite has no array to split ``lineage`` into.
            dead = f"CASE WHEN {key_dead_sql(q, 'a')} THEN 1 ELSE 0 END"
            self.sql = (
                f"WITH RECURSIVE chain(id, parent, dead) AS ("  # noqa: S608
                f"SELECT a.{pk}, a.{parent_id}, {dead} FROM {table} a WHERE a.{pk} = "
                f"(SELECT {parent_id} FROM {table} WHERE {digest} = %s) "
                f"UNION ALL SELECT a.{pk}, a.{parent_id}, {dead} FROM {table} a "
                f"INNER JOIN chain c ON a.{pk} = c.parent) "
                f"SELECT {self.columns.sql}, "
                f"(SELECT COUNT(*) FROM chain WHERE chain.dead = 1) {joins}"
            )
            self.params = lambda now, digest: [now, digest, now, digest]

    def fetch(self, connection, digest: str) -> "ApiKey | None":
        """The key (``dead_ancestors`` set: how many of its ancestors are revoked or expired
        now), or None."""
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with _hot_cursor(connection) as cursor:
            cursor.execute(self.sql, self.params(now, digest))
            row = cursor.fetchone()
        if row is None:
            return None
        key = key_attach(*self.columns.decode(connection, row))
        key.dead_ancestors = row[-1]
        return key


class _DeadAncestorLookup:
    """SQL for "is any of these keys revoked or expired?", composed once per ancestor count.

    Runs on every request made with a derived key; like _DigestLookup it skips the ORM's query
    compilation, which would cost several times the query itself.
    """

    @classmethod
    @cache
    def for_connection(cls, alias: str, vendor: str, count: int) -> "_DeadAncestorLookup":
        return cls(connections[alias], count)

    def __init__(self, connection, count: int) -> None:
        q = connection.ops.quote_name
        meta = ApiKey._meta
        table = q(meta.db_table)
        self.sql = (
            f"SELECT 1 FROM {table} WHERE {table}.{q(meta.pk.column)} IN "  # noqa: S608
            f"({', '.join(['%s'] * count)}) AND {key_dead_sql(q, table)} LIMIT 1"
        )

    def any(self, connection, ids: list[int], now) -> bool:
        with _hot_cursor(connection) as cursor:
            cursor.execute(self.sql, [*ids, connection.ops.adapt_datetimefield_value(now)])
            return cursor.fetchone() is not None


def scopes_withheld(
    *,
    kind: str,
    build_running: bool | None,
    build_trusted: bool | None,
    deploy_tokens_enabled: bool,
) -> frozenset[Scope]:
    """The one rule: which of its granted scopes a key does not hold, given what it is bound to
    (``build_running`` None: bound to no build). Effective scopes are the granted ones minus
    these; ApiKey.effective_scopes and the admin's state filter both derive from this."""
    if build_running is None:
        # Bound to the project, not a build, and not a project key: a deploy token or a key
        # derived from one (project keys are never granted keys:mint). Switched off, not dead,
        # while the project has opted out of deploy tokens.
        if kind != ApiKey.Kind.PROJECT and not deploy_tokens_enabled:
            return frozenset(Scope)
        return frozenset()
    withheld = set()
    if not build_running:
        withheld |= FINISHED_BUILD_REVOKES
        if kind == ApiKey.Kind.BUILD:
            withheld |= frozenset(Scope) - FINISHED_BUILD_KEY_SCOPES
    if not build_trusted:
        withheld.add(Scope.KEYS_MINT)
    return frozenset(withheld)


def _holds_any(scopes) -> Q:
    """Granted any of ``scopes``. The column is a JSON list of scope names, matched as text
    (quoted, so one name never matches inside another): JSON containment is not portable."""
    q = Q(pk__in=[])
    for scope in sorted(scopes):
        q |= Q(scopes__icontains=f'"{scope}"')
    return q


def _contexts() -> list[tuple[Q, dict]]:
    """Every context a key's effective scopes depend on: (SQL condition, scopes_withheld args)."""
    running = ApiKey._meta.get_field("build").related_model.State.RUNNING
    contexts = [
        (
            Q(build__isnull=True, project__deploy_tokens_enabled=enabled),
            {"build_running": None, "build_trusted": None, "deploy_tokens_enabled": enabled},
        )
        for enabled in (True, False)
    ]
    for is_running in (True, False):
        runs = Q(build__state=running) if is_running else ~Q(build__state=running)
        for trusted in (True, False):
            contexts.append(
                (
                    Q(build__isnull=False, build__trusted=trusted) & runs,
                    {
                        "build_running": is_running,
                        "build_trusted": trusted,
                        "deploy_tokens_enabled": True,  # not consulted for build-bound keys
                    },
                )
            )
    return contexts


def _active_by_context(*, want_active: bool) -> Q:
    """Live keys that are active (or, with ``want_active`` False, read-only), as one Q."""
    result = Q(pk__in=[])
    for kind in ApiKey.Kind:
        for where, context in _contexts():
            telling = frozenset(Scope) - scopes_withheld(kind=kind, **context) - READ_ONLY_SCOPES
            holds = _holds_any(telling)
            result |= Q(kind=kind) & where & (holds if want_active else ~holds)
    return result


class ApiKeyQuerySet(models.QuerySet):
    def get_by_digest(self, digest: str) -> "ApiKey | None":
        """One round trip: the key, its build, its project and how many of its ancestors are
        dead (``dead_ancestors``), or None."""
        connection = connections[self.db]
        return _digest_lookup(connection).fetch(connection, digest)

    def active(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )

    def in_state(self, state: str):
        """Keys whose ``ApiKey.state`` is ``state``, in SQL (the admin's state filter).

        Not a second copy of the rule: for every context a key can be in (its kind, whether its
        build runs, is trusted, whether its project takes deploy tokens) the scopes that would
        make it active are computed with scopes_withheld(), the function effective_scopes uses.
        """
        now = timezone.now()
        live = Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        match state:
            case ApiKey.State.REVOKED:
                return self.filter(revoked_at__isnull=False)
            case ApiKey.State.EXPIRED:
                return self.filter(revoked_at__isnull=True, expires_at__lte=now)
            case ApiKey.State.ACTIVE:
                return self.filter(live & _active_by_context(want_active=True))
            case ApiKey.State.READ_ONLY:
                return self.filter(live & _active_by_context(want_active=False))
        return self.none()

    def descendants_of(self, key: "ApiKey"):
        return self.filter(lineage__startswith=key.subtree_lineage)

    def subtree_of(self, key: "ApiKey"):
        return self.filter(Q(pk=key.pk) | Q(lineage__startswith=key.subtree_lineage))

    def any_dead(self, ids: list[int]) -> bool:
        """Is any key among ``ids`` revoked or expired? One prepared query."""
        if not ids:
            return False
        connection = connections[self.db]
        lookup = _DeadAncestorLookup.for_connection(connection.alias, connection.vendor, len(ids))
        return lookup.any(connection, ids, timezone.now())


class ApiKey(models.Model):
    """A credential. The token itself is never stored: only its keyed digest."""

    class Kind(models.TextChoices):
        PROJECT = "project", "project"
        BUILD = "build", "build"
        DERIVED = "derived", "derived"
        DEPLOY = "deploy", "deploy"

    class State(models.TextChoices):
        ACTIVE = "active", "active"
        READ_ONLY = "read-only", "read-only"
        EXPIRED = "expired", "expired"
        REVOKED = "revoked", "revoked"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200, blank=True)
    project = models.ForeignKey(
        "builds.Project",
        on_delete=models.CASCADE,
        related_name="keys",
        help_text="Every key is confined to one project.",
    )
    build = models.ForeignKey(
        "builds.Build",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="keys",
        help_text="Set for build keys and keys derived from them: the key reaches this build only.",
    )
    parent = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="children",
        help_text="The key this one was derived from; revoking the parent revokes this key.",
    )
    lineage = models.CharField(
        max_length=512,
        default="/",
        db_index=True,
        help_text="Ancestor ids, root first ('/3/17/'): finds a subtree in one query.",
    )
    scopes = models.JSONField(default=list, help_text="Scopes granted at creation.")
    path_prefix = models.CharField(
        max_length=1024, blank=True, help_text="If set, only artifacts under this path."
    )
    ref_pattern = models.CharField(
        max_length=255,
        blank=True,
        help_text="Deploy tokens: only builds whose ref matches this glob (e.g. refs/tags/*).",
    )
    replaces = models.OneToOneField(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="replaced_by",
        help_text="Deploy tokens: the token this one replaced by rotation (which keeps working "
        "for the grace period, then is dead).",
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    seed = models.CharField(
        max_length=64,
        blank=True,
        editable=False,
        help_text="Re-derivable tokens (deploy) only: a random seed; deriving needs the pepper.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=200, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.kind} key {self.pk}" + (f" ({self.name})" if self.name else "")

    @property
    def subtree_lineage(self) -> str:
        return f"{self.lineage}{self.pk}/"

    @property
    def ancestor_ids(self) -> list[int]:
        return [int(part) for part in self.lineage.strip("/").split("/") if part]

    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def depth(self) -> int:
        """How many derivations separate this key from its root (a root key is depth 0)."""
        return len(self.ancestor_ids)

    def is_alive(self, now=None) -> bool:
        return not self.is_revoked() and not self.is_expired(now)

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def effective_scopes(self) -> frozenset[Scope]:
        """Scopes this key holds *now*, from what it was granted and the live state of what it is
        bound to. A finished build removes write scopes; nothing is flipped by a background job."""
        if self.is_revoked() or self.is_expired():
            return frozenset()
        build = self.build
        withheld = scopes_withheld(
            kind=self.kind,
            build_running=None if build is None else build.is_running,
            build_trusted=None if build is None else build.trusted,
            deploy_tokens_enabled=self.project.deploy_tokens_enabled,
        )
        return frozenset(Scope(s) for s in self.scopes) - withheld

    @property
    def is_shared(self) -> bool:
        """A deploy token: one token handed to every trusted build and every CD consumer, so no
        single holder may pull a lever that cuts off the others (revoking it, tripping it)."""
        return self.kind == self.Kind.DEPLOY

    @property
    def is_switched_off(self) -> bool:
        """A deploy token (or a key derived from one) of a project that opted out."""
        return self.build_id is None and scopes_withheld(
            kind=self.kind,
            build_running=None,
            build_trusted=None,
            deploy_tokens_enabled=self.project.deploy_tokens_enabled,
        ) == frozenset(Scope)

    @property
    def state(self) -> "ApiKey.State":
        if self.is_revoked():
            return self.State.REVOKED
        if self.is_expired():
            return self.State.EXPIRED
        if self.effective_scopes <= READ_ONLY_SCOPES:
            return self.State.READ_ONLY
        return self.State.ACTIVE

    def touch(self, *, ip: str | None) -> None:
        """Record last use, at most once per KEY_LAST_USED_INTERVAL (no write per request)."""
        now = timezone.now()
        interval = timedelta(seconds=settings.KEY_LAST_USED_INTERVAL)
        if self.last_used_at is not None and now - self.last_used_at < interval:
            return
        ApiKey.objects.filter(pk=self.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - interval)
        ).update(last_used_at=now, last_used_ip=ip)
        self.last_used_at, self.last_used_ip = now, ip


class AuditEvent(models.Model):
    """Who did what with which key. Never holds a token: only key ids."""

    class Action(models.TextChoices):
        MINT = "mint", "mint"
        DERIVE = "derive", "derive"
        ROTATE = "rotate", "rotate"
        REVOKE = "revoke", "revoke"
        DENIED = "denied", "denied"
        WRITE_DENIED = "write_denied", "write denied"
        TRIPWIRE = "tripwire", "tripwire"
        SHARE = "share", "share"
        STATUS = "status", "status"
        EXPIRY_WARNING = "expiry_warning", "expiry warning"
        WEBHOOK_DISABLED = "webhook_disabled", "webhook disabled"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_events"
    )
    project = models.ForeignKey(
        "builds.Project", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    build = models.ForeignKey(
        "builds.Build", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor = models.CharField(
        max_length=200, blank=True, help_text="Who acted: 'key:<id>', 'user:<name>' or 'system'."
    )
    reason = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["key", "action", "created_at"])]

    def __str__(self) -> str:
        return f"{self.action} key={self.key_id} {self.reason}".strip()
