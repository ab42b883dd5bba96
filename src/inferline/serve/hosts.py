"""Loopback addresses: the server binds one by default and then trusts only loopback `Host`s.

Kept free of Starlette so the CLI can check `--host` before the serve extra is imported.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("[::1]"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
