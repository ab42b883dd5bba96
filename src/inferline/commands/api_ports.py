"""`serve --management-port/--metrics-port`: TorchServe's port split, checked and bound.

Without them one port answers everything. With them, management (`/models...`, v2's
repository) answers only on its port, bound to 127.0.0.1 unless `--ts-config` gives another
host (which then needs `--token`), and `/metrics` only on its port, bound to the inference
`--host` (or `metrics_address`'s host). The inference port may then face the network without
a token, since management is not reachable there; the v2 gRPC API (its repository RPCs are
management) stays off in that case unless a token is set.

Example:
    >>> split = ApiPorts("0.0.0.0", 8080, management_port=8081, metrics_port=8082)
    >>> split.ports()
    {'inference': 8080, 'management': 8081, 'metrics': 8082}
"""

from __future__ import annotations

from dataclasses import dataclass

from inferline.errors import InferlineError
from inferline.serve.hosts import is_loopback


@dataclass(frozen=True)
class ApiPorts:
    """Where inference, management and metrics listen (None: on the inference port)."""

    host: str
    port: int
    management_port: int | None = None
    management_host: str = "127.0.0.1"
    metrics_port: int | None = None
    metrics_host: str | None = None

    @property
    def split(self) -> bool:
        return bool(self.management_port or self.metrics_port)

    @property
    def manager_host(self) -> str:
        """The host the management API is reachable on."""
        return self.management_host if self.management_port else self.host

    def ports(self) -> dict[str, int] | None:
        if not self.split:
            return None
        return {
            "inference": self.port,
            "management": self.management_port or self.port,
            "metrics": self.metrics_port or self.port,
        }

    def sockets(self) -> list[tuple[str, str, int]]:
        """(flag, host, port) of each socket to listen on."""
        out = [("--port", self.host, self.port)]
        if self.management_port:
            out.append(("--management-port", self.management_host, self.management_port))
        if self.metrics_port:
            out.append(("--metrics-port", self.metrics_host or self.host, self.metrics_port))
        return out

    def check(self, token: str | None) -> None:
        """One-line errors for ports that clash or a management API exposed without a token."""
        seen: dict[int, str] = {}
        for flag, _, port in self.sockets():
            if not 0 < port < 65536:
                raise InferlineError(f"serve: {flag} {port}; expected a port number 1-65535")
            if port in seen:
                raise InferlineError(
                    f"serve: {seen[port]} and {flag} are both {port}; give each API its own port"
                )
            seen[port] = flag
        if is_loopback(self.manager_host) or token:
            return
        if not self.management_port:
            raise InferlineError(
                f"serve: binding {self.host} exposes the management API to the network; pass --token TOKEN "
                "(or bind --host 127.0.0.1, or give management its own port with --management-port)"
            )
        raise InferlineError(
            f"serve: management_address {self.management_host} exposes the management API to the network; "
            "pass --token TOKEN (or bind it to 127.0.0.1)"
        )

    def describe(self) -> str:
        return ", ".join(
            f"{flag.removeprefix('--').removesuffix('-port')} http://{host}:{port}"
            for flag, host, port in self.sockets()[1:]
        )
