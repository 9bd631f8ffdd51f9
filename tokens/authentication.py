from rest_framework.authentication import BaseAuthentication, get_authorization_header

from .errors import InvalidCredential
from .services import key_authenticate


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``: puts the ApiKey on ``request.auth``.

    Tokens are accepted only in this header, never in a query string or path.
    """

    keyword = b"bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise InvalidCredential(
                "Malformed Authorization header: expected 'Bearer <token>'.", code="malformed"
            )
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidCredential("Invalid API token.", code="invalid_token") from None
        key = key_authenticate(token=token, ip=client_ip(request))
        return (None, key)

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (with WWW-Authenticate) rather than 403 for missing credentials.
        return 'Bearer realm="artifactcourier"'
