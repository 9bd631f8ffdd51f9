"""The guard's decision for every address class. Nothing here connects anywhere: hostnames go
through a resolver the test controls, and refused targets are never contacted."""

import socket
import threading

import pytest

from webhooks import transport
from webhooks.ssrf import TargetRefused, target_resolve

REFUSED = [
    "127.0.0.2",  # loopback (only 127.0.0.1 is allowlisted in the tests)
    "127.255.255.254",
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: AWS, GCP, Azure metadata
    "169.254.170.2",  # ECS task metadata
    "100.64.0.1",  # CGNAT
    "100.100.100.200",  # Alibaba metadata (CGNAT)
    "192.0.0.192",  # Oracle metadata
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "0.0.0.0",  # unspecified
    "255.255.255.255",
    "198.18.0.1",  # benchmarking
    "::1",
    "::",
    "fe80::1",  # link-local
    "fc00::1",  # unique-local
    "fd00:ec2::254",  # AWS IPv6 metadata
    "ff02::1",  # multicast
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",  # mapped loopback: refused even though 127.0.0.1 is allowed
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:0a00:0001::1",  # 6to4 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::0a00:0001",  # NAT64 of 10.0.0.1
    "64:ff9b:1::1",  # local-use NAT64
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
]


def resolver(*addresses):
    def resolve(host, port, **kwargs):
        family = {4: socket.AF_INET}
        return [
            (socket.AF_INET6 if ":" in a else family[4], socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    return resolve


@pytest.fixture(autouse=True)
def _allow_only_127_0_0_1(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]


@pytest.mark.parametrize("address", REFUSED)
def test_literal_addresses_of_every_non_public_class_are_refused(address):
    with pytest.raises(TargetRefused):
        target_resolve(address, 443, resolve=resolver())


@pytest.mark.parametrize("address", REFUSED)
def test_a_hostname_resolving_to_one_is_refused(address):
    with pytest.raises(TargetRefused, match=r"hooks\.example resolves to"):
        target_resolve("hooks.example", 443, resolve=resolver(address))


def test_one_bad_address_among_good_ones_is_enough_to_refuse():
    with pytest.raises(TargetRefused):
        target_resolve("hooks.example", 443, resolve=resolver("93.184.216.34", "10.0.0.1"))


def test_public_and_allowlisted_addresses_pass_and_are_what_gets_connected():
    assert str(target_resolve("hooks.example", 443, resolve=resolver("93.184.216.34")).address) == (
        "93.184.216.34"
    )
    assert str(target_resolve("127.0.0.1", 80, resolve=resolver()).address) == "127.0.0.1"


def test_the_allowlist_admits_a_network(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    assert target_resolve("hooks.internal", 443, resolve=resolver("10.20.3.4")).address
    with pytest.raises(TargetRefused):
        target_resolve("hooks.internal", 443, resolve=resolver("10.21.0.1"))


def test_unresolvable_host_is_refused():
    def fail(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    with pytest.raises(TargetRefused, match="cannot resolve"):
        target_resolve("nowhere.invalid", 443, resolve=fail)


def test_a_refused_target_is_a_failed_attempt_without_any_connection(settings):
    calls = []

    def resolve(host, port, **kwargs):
        calls.append(host)
        return resolver("169.254.169.254")(host, port)

    outcome = transport.post(
        url=transport.url_parse("https://metadata.example/latest"),
        headers={},
        body=b"{}",
        resolve=resolve,
    )
    assert calls == ["metadata.example"]  # resolved once
    assert outcome.status_code is None and outcome.error.startswith("refused:")


def test_a_resolver_slower_than_the_connect_timeout_is_a_failed_attempt(settings):
    # Name resolution counts toward the attempt's time: a domain whose name server answers
    # slowly would otherwise hold the worker past the task's time limit (killed, unrecorded).
    settings.WEBHOOK_CONNECT_TIMEOUT = 0.2
    release = threading.Event()

    def slow(host, port, **kwargs):
        release.wait(5)
        return resolver("127.0.0.1")(host, port)

    try:
        outcome = transport.post(
            url=transport.url_parse("https://slow-dns.example/hook"),
            headers={},
            body=b"{}",
            resolve=slow,
        )
    finally:
        release.set()
    assert outcome.status_code is None
    assert outcome.error.startswith("refused: cannot resolve slow-dns.example within")
