"""Scope names: defined here once, referenced everywhere else by constant."""

from enum import StrEnum


class Scope(StrEnum):
    BUILDS_CREATE = "builds:create"
    WEBHOOKS_MANAGE = "webhooks:manage"
    TOKENS_MANAGE = "tokens:manage"
    ARTIFACTS_READ = "artifacts:read"
    ARTIFACTS_WRITE = "artifacts:write"
    BUILD_FINISH = "build:finish"
    BUILD_STATUS = "build:status"
    KEYS_MINT = "keys:mint"


ALL_SCOPES = frozenset(Scope)

PROJECT_KEY_SCOPES = frozenset({Scope.BUILDS_CREATE})
PROJECT_KEY_OPTIONAL_SCOPES = frozenset({Scope.WEBHOOKS_MANAGE, Scope.TOKENS_MANAGE})
BUILD_KEY_SCOPES = frozenset(
    {
        Scope.ARTIFACTS_READ,
        Scope.ARTIFACTS_WRITE,
        Scope.BUILD_FINISH,
        Scope.BUILD_STATUS,
        Scope.KEYS_MINT,
    }
)
# What a build key keeps once its build has finished (DESIGN.md "Credentials").
FINISHED_BUILD_KEY_SCOPES = frozenset({Scope.ARTIFACTS_READ, Scope.KEYS_MINT})
# What every key bound to a finished build loses. A derived key keeps build:status, so a
# downstream can still report its verdict on a finished build (that is when it reports).
FINISHED_BUILD_REVOKES = frozenset({Scope.ARTIFACTS_WRITE, Scope.BUILD_FINISH})
DEPLOY_KEY_SCOPES = frozenset({Scope.ARTIFACTS_READ})
# A live key holding nothing beyond these (effective now) is shown as read-only.
READ_ONLY_SCOPES = frozenset({Scope.ARTIFACTS_READ, Scope.KEYS_MINT})
# Scopes that change state: a denial on one of these is a write attempt (tripwire input).
WRITE_SCOPES = ALL_SCOPES - {Scope.ARTIFACTS_READ}


def parse_scopes(values) -> frozenset[Scope]:
    """Validate a list of scope names from input; raise ValueError naming the unknown ones."""
    unknown = sorted(set(values) - {s.value for s in Scope})
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    return frozenset(Scope(v) for v in values)
