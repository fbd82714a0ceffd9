"""The web console: a static page (no build step, no CDN) served on the HTTP port at /console/, and
the JSON API it calls (`/console/api/*`)."""

from pathlib import Path

from server.console.api import ConsoleApi

STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = ["STATIC_DIR", "ConsoleApi"]
