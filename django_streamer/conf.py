"""Settings, read on every access so ``override_settings`` just works.

Each property is one setting: its name, its default and its type are listed in
the README (a test keeps the two in step).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    "STREAMER_CHUNK_SIZE": 64 * 1024,
    "STREAMER_FLUSH_INTERVAL": 0.1,
    "STREAMER_X_ACCEL_BUFFERING": True,
}


class Settings:
    def _get(self, name: str) -> Any:
        return getattr(django_settings, name, DEFAULTS[name])

    @property
    def STREAMER_CHUNK_SIZE(self) -> int:
        """Bytes per chunk put on the wire; the last chunk may be shorter."""
        value: int = self._get("STREAMER_CHUNK_SIZE")
        return value

    @property
    def STREAMER_FLUSH_INTERVAL(self) -> float:
        """Seconds a buffered byte may wait before it is sent; 0 sends every piece."""
        value: float = self._get("STREAMER_FLUSH_INTERVAL")
        return value

    @property
    def STREAMER_X_ACCEL_BUFFERING(self) -> bool:
        """Send ``X-Accel-Buffering: no`` so nginx passes chunks straight on."""
        value: bool = self._get("STREAMER_X_ACCEL_BUFFERING")
        return value


conf = Settings()
