"""The HTTP side of the service: an OpenAI-compatible front (`/v1`) and a control plane in the shape of
hosted routers' API (`/v2/gen-ai/models/routers`). Both call the same domain code as the gRPC servicer."""

from server.http.api import build_http_app

__all__ = ["build_http_app"]
