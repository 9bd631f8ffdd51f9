"""The SSRF guard: which addresses a webhook may be sent to.

A target's host is resolved once; every address it resolves to must be public (or inside a
network WEBHOOK_ALLOWED_NETWORKS admits), and the request then connects to the address that was
checked, so a second lookup cannot answer differently (DNS rebinding).
"""

import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Named explicitly although is_global already excludes most: these are the ones attackers aim at.
_FORBIDDEN_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT (RFC 6598); also Alibaba's metadata 100.100.100.200
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, AWS/GCP/Azure metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments (Oracle metadata 192.0.0.192)
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",  # unique-local (AWS's IPv6 metadata fd00:ec2::254)
        "fe80::/10",
        "ff00::/8",
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
    )
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix


class TargetRefused(Exception):
    """The target may not be contacted; the message says why (shown in the delivery log)."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    address: Address


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, Teredo client)."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _allowed_networks():
    return [ipaddress.ip_network(n, strict=False) for n in settings.WEBHOOK_ALLOWED_NETWORKS]


def address_check(address: Address) -> None:
    """Raise TargetRefused unless ``address`` is public or explicitly allowed."""
    allowed = [n for n in _allowed_networks() if n.version == address.version]
    if any(address in network for network in allowed):
        return
    inner = _embedded_ipv4(address)
    if inner is not None:
        try:
            address_check(inner)
        except TargetRefused:
            raise TargetRefused(f"{address} embeds {inner}, not a public address") from None
    if (
        any(address in n for n in _FORBIDDEN_NETWORKS if n.version == address.version)
        or not address.is_global
        or address.is_multicast
    ):
        raise TargetRefused(
            f"{address} is not a public address (loopback, private, link-local, metadata, ...); "
            "WEBHOOK_ALLOWED_NETWORKS can admit it"
        )


Resolver = Callable[..., list]


def _resolve_bounded(resolve: Resolver, host: str, port: int) -> list:
    """``resolve`` within WEBHOOK_CONNECT_TIMEOUT. getaddrinfo cannot be interrupted, and a
    host's name server (the receiver's to choose) may answer as slowly as it likes: the
    lookup runs in a daemon thread that is abandoned when it takes too long, so the attempt
    ends as a failure instead of holding the worker until the task is killed."""
    timeout = settings.WEBHOOK_CONNECT_TIMEOUT
    answer: dict = {}

    def lookup() -> None:
        try:
            answer["infos"] = resolve(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            answer["error"] = error

    thread = threading.Thread(target=lookup, name="webhook-resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TargetRefused(f"cannot resolve {host} within {timeout:g}s")
    if "error" in answer:
        raise TargetRefused(f"cannot resolve {host}: {answer['error']}")
    return answer.get("infos", [])


def target_resolve(host: str, port: int, *, resolve: Resolver = socket.getaddrinfo) -> Target:
    """Resolve ``host`` once and check every address; the first one is where to connect."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        infos = _resolve_bounded(resolve, host, port)
        addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
        if not addresses:
            raise TargetRefused(f"{host} resolves to no address")
    for address in addresses:
        try:
            address_check(address)
        except TargetRefused as refused:
            raise TargetRefused(f"{host} resolves to {refused}") from None
    return Target(host=host, port=port, address=addresses[0])
