"""The SSRF guard: only https, only public addresses (unless allowed), checked on every
resolution."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.webhooks.destinations import DestinationPolicy, check_url, checked_addresses
from gateway.webhooks.errors import DestinationRefused, UnsafeDestination

STRICT = DestinationPolicy()


def resolver(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(_host: str, _port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # not https
        "http://127.0.0.1:8080/x",  # loopback http without the setting
        "ftp://hooks.example.com/x",
        "https://user:pw@hooks.example.com/x",  # credentials in the URL
        "https:///nohost",
        "https://hooks.example.com:99999/x",
    ],
)
def test_urls_refused_before_any_lookup(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        check_url(url, STRICT)


def test_http_loopback_only_with_the_setting() -> None:
    policy = DestinationPolicy(allow_insecure_loopback=True)
    assert check_url("http://127.0.0.1:9/x", policy).port == 9
    with pytest.raises(UnsafeDestination):
        check_url("http://10.0.0.1/x", policy)


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space
        "::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "fe80::1",
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "0.0.0.0",
        "224.0.0.1",
    ],
)
async def test_private_and_metadata_addresses_refused(address: str) -> None:
    target = check_url("https://hooks.example.com/x", STRICT)
    with pytest.raises(DestinationRefused) as caught:
        await checked_addresses(target, STRICT, resolver(address))
    assert caught.value.code == "refused_address"


async def test_one_private_answer_among_public_ones_refuses_the_host() -> None:
    target = check_url("https://hooks.example.com/x", STRICT)
    with pytest.raises(DestinationRefused):
        await checked_addresses(target, STRICT, resolver("93.184.216.34", "10.0.0.7"))


async def test_public_addresses_pass_and_listed_networks_are_allowed() -> None:
    target = check_url("https://hooks.example.com/x", STRICT)
    assert await checked_addresses(target, STRICT, resolver("93.184.216.34")) == [
        ipaddress.ip_address("93.184.216.34")
    ]
    inside = DestinationPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),))
    assert await checked_addresses(target, inside, resolver("10.20.3.4"))
    with pytest.raises(DestinationRefused):
        await checked_addresses(target, inside, resolver("10.21.3.4"))


async def test_a_literal_private_address_is_refused_without_dns() -> None:
    target = check_url("https://10.0.0.1/x", STRICT)
    with pytest.raises(DestinationRefused):
        await checked_addresses(target, STRICT, resolver("93.184.216.34"))


async def test_unresolvable_hosts_are_refused() -> None:
    async def fails(_host: str, _port: int) -> list[str]:
        raise OSError("no such host")

    target = check_url("https://nowhere.invalid/x", STRICT)
    with pytest.raises(DestinationRefused) as caught:
        await checked_addresses(target, STRICT, fails)
    assert caught.value.code == "unresolvable"
