"""Pre-signed links for a payload, through the sharing service (no signing of our own)."""


def links_mint(*, key, build, expires_at, base_url, limit):
    """Listing URL and one URL per artifact ``key`` may see (at most ``limit``, the first in
    path order), valid until ``expires_at``."""
    from artifacts.sharing import share_links

    return share_links(key=key, build=build, expires_at=expires_at, base_url=base_url, limit=limit)
