"""Minting, authenticating, revoking and auditing keys. Views, admin and commands call these.

One module per concern; callers import from ``tokens.services``.
"""

from .authentication import key_authenticate
from .denials import key_denied
from .deploy import (
    RotatedDeployToken,
    deploy_token_current,
    deploy_token_max_seconds,
    deploy_token_mint,
    deploy_token_rotate,
)
from .derivation import key_derive
from .downstream import key_derive_for_downstream, key_token
from .expiry import ExpiryWarning, key_expiry_warn
from .minting import audit, key_mint_for_build, key_mint_project
from .revocation import key_revoke
from .sharing import (
    LinkKeyDead,
    key_mint_share,
    link_key_check,
    share_allowed,
)

__all__ = [
    "ExpiryWarning",
    "LinkKeyDead",
    "RotatedDeployToken",
    "audit",
    "deploy_token_current",
    "deploy_token_max_seconds",
    "deploy_token_mint",
    "deploy_token_rotate",
    "key_authenticate",
    "key_denied",
    "key_derive",
    "key_derive_for_downstream",
    "key_expiry_warn",
    "key_mint_for_build",
    "key_mint_project",
    "key_mint_share",
    "key_revoke",
    "key_token",
    "link_key_check",
    "share_allowed",
]
