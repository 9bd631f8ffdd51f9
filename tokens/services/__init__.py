"""Minting, authenticating, revoking and auditing keys. Views, admin and commands call these.

One module per concern; callers import from ``tokens.services``.
"""

from .authentication import key_alive, key_authenticate
from .denials import audit_refusal, key_denied, key_path_check
from .deploy import (
    RotatedDeployToken,
    deploy_token_current,
    deploy_token_max_seconds,
    deploy_token_mint,
    deploy_token_rotate,
    deploy_token_rotate_away,
)
from .derivation import key_derive
from .downstream import key_token, keys_derive_for_downstream
from .expiry import ExpiryWarning, key_expiry_warn
from .minting import audit, key_mint_for_build, key_mint_project
from .revocation import key_revoke, key_revoke_by
from .sharing import (
    LinkAccess,
    LinkKeyDead,
    key_mint_share,
    link_check,
    link_key_check,
    share_allowed,
)

__all__ = [
    "ExpiryWarning",
    "LinkAccess",
    "LinkKeyDead",
    "RotatedDeployToken",
    "audit",
    "audit_refusal",
    "deploy_token_current",
    "deploy_token_max_seconds",
    "deploy_token_mint",
    "deploy_token_rotate",
    "deploy_token_rotate_away",
    "key_alive",
    "key_authenticate",
    "key_denied",
    "key_derive",
    "key_expiry_warn",
    "key_mint_for_build",
    "key_mint_project",
    "key_mint_share",
    "key_path_check",
    "key_revoke",
    "key_revoke_by",
    "key_token",
    "keys_derive_for_downstream",
    "link_check",
    "link_key_check",
    "share_allowed",
]
