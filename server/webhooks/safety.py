"""Where a webhook may go: https on a public address, checked on the address itself.

A webhook URL is chosen by a customer's admin and fetched by our server, from inside our
network: without checks it is a way to reach the cloud metadata service, the database or
anything else only the server can see (server-side request forgery). So:

- the URL must be ``https`` (plain ``http`` only when a setting allows it);
- the host name is resolved by us, every address it resolves to is checked, and the
  connection goes to the checked address (the name stays in the Host header and TLS
  SNI). Checking the name and letting the HTTP client resolve it again would let a DNS
  answer that changes between the two (DNS rebinding) slip through;
- loopback, private, link-local, multicast and reserved addresses are refused unless the
  network is listed in a setting (the tests allow 127.0.0.0/8 for their local receiver);
- redirects are never followed (a 3xx answer is a failed attempt), so a receiver cannot
  bounce us to an address that was never checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL_LENGTH = 2048


class Refused(Exception):
    """The URL or the address it resolves to is not one we send to; says why."""


@dataclass(frozen=True)
class Policy:
    allow_http: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, allow_http: bool, networks: str) -> Policy:
        return cls(
            allow_http,
            tuple(ipaddress.ip_network(n.strip()) for n in networks.split(",") if n.strip()),
        )

    def check_url(self, url: str) -> tuple[str, str, int]:
        """Scheme, host and port of an acceptable URL (an IP literal is checked too)."""
        if len(url) > MAX_URL_LENGTH:
            raise Refused(f"longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise Refused(f"not a URL: {e}") from None
        if parts.scheme not in ("https", "http"):
            raise Refused("must be an https URL")
        if parts.scheme == "http" and not self.allow_http:
            raise Refused("must be https (plain http is refused)")
        if parts.username or parts.password:
            raise Refused("credentials in the URL are refused; sign with the secret instead")
        host = parts.hostname or ""
        if not host:
            raise Refused("has no host")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            self.check_address(literal)
        return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)

    def check_address(self, address: IPAddress) -> None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed_networks):
            return
        if not address.is_global or address.is_multicast:
            raise Refused(f"{address} is {_kind(address)}, not a public address")

    async def resolve(self, url: str) -> tuple[str, str, str, int]:
        """(scheme, host, the checked address to connect to, port), or Refused.

        Every address the name has must pass: a name with one public and one private
        address could otherwise be steered to the private one.
        """
        scheme, host, port = self.check_url(url)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as e:
            raise Refused(f"cannot resolve {host}: {e.strerror}") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses:
            raise Refused(f"{host} has no address")
        for address in addresses:
            self.check_address(address)
        return scheme, host, str(addresses[0]), port


def _kind(address: IPAddress) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    if address.is_multicast:
        return "multicast"
    return "reserved"
