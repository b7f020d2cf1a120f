"""A broker address as hub and spoke configuration files write it (shared, pure)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator


class BrokerURL(BaseModel):
    """One broker: ``mqtt://host:port`` or ``mqtts://host:port`` with TLS files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        problem = f"{value!r} is not an mqtt://HOST:PORT or mqtts://HOST:PORT URL"
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            raise ValueError(problem)
        if parts.username or parts.password or parts.path not in {"", "/"} or parts.query:
            raise ValueError(f"{problem}: credentials, paths and queries are not used here")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{problem}: the port is not a number from 1 to 65535") from exc
        if port == 0:
            raise ValueError(f"{problem}: port 0")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def identity(self) -> str:
        """What makes two channels share one connection."""
        return f"{urlsplit(self.url).scheme}://{self.host}:{self.port}"
