"""Service configuration from command-line flags and REALNAME_* environment variables."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from services.domain.ratelimit import RateLimit, RateLimiter, RateLimitSyntaxError
from services.storage.database import DatabaseConfig, sqlite_url

DEFAULT_GRPC_ADDRESS = "127.0.0.1:50051"
DEFAULT_HTTP_ADDRESS = "127.0.0.1:8080"
# The regulator's dashboard: HTTPS with a client certificate, apart from the public HTTP side.
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:8443"
# More threads than this only add GIL hand-offs: the work per RPC is CPU-bound Python plus
# short database round trips (measured: 8 threads served as fast as 32).
DEFAULT_THREADS = 16
# Whole-service rate limits ("rate/burst"), split evenly over the --workers processes. Generous
# enough for the benches (one operator at ~1,500 RPC/s, one hot document at ~250 RPC/s).
DEFAULT_PRINCIPAL_RATE = RateLimit(5000, 10000)
DEFAULT_DOCUMENT_RATE = RateLimit(500, 1000)
# Per-call layers that REALNAME_LAYERS_OFF may switch off, for measuring what each costs
# (bench.bench_layers); never for production: "audit" stops recording accesses, "guards" lets
# suspended operators, blocklisted documents and unregistered agents through.
SWITCHABLE_LAYERS = frozenset({"audit", "metrics", "guards"})


class ConfigError(Exception):
    """Raised when the configuration is unusable (with a message for the operator)."""


@dataclass(frozen=True)
class Settings:
    """Everything `realname serve` needs to start."""

    data_dir: Path
    grpc_address: str = DEFAULT_GRPC_ADDRESS
    http_address: str = DEFAULT_HTTP_ADDRESS
    admin_address: str = DEFAULT_ADMIN_ADDRESS
    database_url: str | None = None
    # A standby for the public HTTP reads (registry page, log tiles, CRLs, OCSP), if any.
    read_database_url: str | None = None
    db_isolation: str = "default"
    insecure: bool = False
    grace_seconds: float = 10.0
    max_workers: int = DEFAULT_THREADS
    principal_rate: RateLimit | None = DEFAULT_PRINCIPAL_RATE
    document_rate: RateLimit | None = DEFAULT_DOCUMENT_RATE
    workers: int = 1
    layers_off: frozenset[str] = frozenset()

    @property
    def pki_dir(self) -> Path:
        """The transport PKI made by dev-init (or provided by the deployment)."""
        return self.data_dir / "dev-pki"

    @property
    def pepper_path(self) -> Path:
        """The identity pepper file."""
        return self.data_dir / "pepper"

    @property
    def holder_name_key_path(self) -> Path:
        """Holder-name AES-GCM keys (absent: keys derived from the pepper)."""
        return self.data_dir / "holder-name.keys"

    @property
    def proofing_loader_key_path(self) -> Path:
        """Public key that must sign identity-record import files (`realname proofing load`)."""
        return self.data_dir / "proofing-loader.pem"

    def rate_limiter(self, scope: str) -> RateLimiter | None:
        """This process's limiter for ``principal`` or ``document``: its 1/workers share."""
        limit = self.principal_rate if scope == "principal" else self.document_rate
        return None if limit is None else RateLimiter(limit.split(self.workers), scope)

    def read_database(self) -> DatabaseConfig | None:
        """REALNAME_READ_DATABASE_URL's database with the primary's settings, or None."""
        if not self.read_database_url:
            return None
        return dataclasses.replace(self.database(), url=self.read_database_url)

    def database(self) -> DatabaseConfig:
        """The database to use: REALNAME_DATABASE_URL, else SQLite under the data directory."""
        return DatabaseConfig(
            url=self.database_url or sqlite_url(self.data_dir),
            isolation=self.db_isolation,
            pool_size=self.max_workers,
            **database_timeouts(),
        )


def env_default(name: str, fallback: str | None = None) -> str | None:
    """Reads a REALNAME_* environment variable."""
    return os.environ.get(name, fallback)


# REALNAME_DB_* variable -> DatabaseConfig field: PostgreSQL timeouts and keepalives (0: off).
DATABASE_TIMEOUT_VARIABLES = {
    "REALNAME_DB_CONNECT_TIMEOUT_S": "connect_timeout_s",
    "REALNAME_DB_STATEMENT_TIMEOUT_MS": "statement_timeout_ms",
    "REALNAME_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "idle_in_transaction_timeout_ms",
    "REALNAME_DB_KEEPALIVES_IDLE_S": "keepalives_idle_s",
    "REALNAME_DB_KEEPALIVES_INTERVAL_S": "keepalives_interval_s",
    "REALNAME_DB_KEEPALIVES_COUNT": "keepalives_count",
    "REALNAME_DB_TCP_USER_TIMEOUT_MS": "tcp_user_timeout_ms",
    "REALNAME_DB_STALL_TIMEOUT_MS": "stall_timeout_ms",
}


def database_timeouts() -> dict[str, int]:
    """The REALNAME_DB_* timeouts that are set, as DatabaseConfig fields; ConfigError if bad."""
    found: dict[str, int] = {}
    for name, field_name in DATABASE_TIMEOUT_VARIABLES.items():
        text = env_default(name)
        if text is None or text == "":
            continue
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= 86_400_000:
            raise ConfigError(f"{name} must be a whole number from 0 (off) to 86400000")
        found[field_name] = value
    return found


DEFAULT_AUDIT_ANCHOR_SECONDS = 60.0
# Each anchor is one log entry when records arrived since the last: a second is as often as a
# log that witnesses and monitors follow should take them, a day the longest window worth having.
AUDIT_ANCHOR_SECONDS_RANGE = (1.0, 86400.0)


def audit_anchor_seconds() -> float:
    """The audit anchor window from ``REALNAME_AUDIT_ANCHOR_SECONDS``; ConfigError if unusable."""
    text = env_default("REALNAME_AUDIT_ANCHOR_SECONDS") or str(DEFAULT_AUDIT_ANCHOR_SECONDS)
    low, high = AUDIT_ANCHOR_SECONDS_RANGE
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not low <= seconds <= high:  # NaN fails every comparison
        raise ConfigError(
            f"REALNAME_AUDIT_ANCHOR_SECONDS must be a number of seconds from {low:g} to {high:g}"
        )
    return seconds


def layers_off(text: str | None) -> frozenset[str]:
    """Parses ``REALNAME_LAYERS_OFF`` (comma-separated layer names); ConfigError if unknown."""
    names = frozenset(n.strip() for n in (text or "").split(",") if n.strip())
    unknown = names - SWITCHABLE_LAYERS
    if unknown:
        raise ConfigError(
            f"REALNAME_LAYERS_OFF names unknown layers {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(SWITCHABLE_LAYERS))}"
        )
    return names


def rate_limit_argument(text: str) -> RateLimit | None:
    """Parses a ``--rate-*`` flag or REALNAME_RATE_* value: ``rate/burst`` or ``off``."""
    try:
        return RateLimit.parse(text)
    except RateLimitSyntaxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """Adds ``--data-dir`` (env REALNAME_DATA_DIR; required when the variable is unset)."""
    default = env_default("REALNAME_DATA_DIR")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(default) if default else None,
        required=default is None,
        help="data directory (env REALNAME_DATA_DIR)",
    )


def host_of(address: str) -> str:
    """The host part of ``host:port`` (brackets stripped from IPv6)."""
    host = address.rsplit(":", 1)[0]
    return host.strip("[]")


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` binds only to a loopback interface."""
    host = host_of(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate(settings: Settings) -> None:
    """Refuses unsafe combinations, such as plaintext off loopback."""
    if settings.insecure and not is_loopback(settings.grpc_address):
        raise ConfigError(
            f"plaintext serving is only allowed on a loopback address, not {settings.grpc_address}"
        )
    if settings.read_database_url and not (settings.database_url or "").startswith("postgresql"):
        raise ConfigError("REALNAME_READ_DATABASE_URL needs a PostgreSQL REALNAME_DATABASE_URL")
    if settings.db_isolation not in ("default", "serializable"):
        raise ConfigError("REALNAME_DB_ISOLATION must be 'default' or 'serializable'")
