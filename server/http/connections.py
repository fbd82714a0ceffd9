"""Connection-level limits uvicorn lacks: a deadline for a request's headers and a connection cap.

uvicorn (h11) times a connection out only between requests, after a first response, and any byte
cancels that timer; a client that connects and sends nothing, or sends half its headers and stops
(slowloris), holds its connection and its memory for ever. Here every request's headers must be
complete within `header_timeout_s` of its first byte (or of the connection, for the first one),
and past `max_connections` open connections a new one gets 503 and is closed at once.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_BUSY_BODY = (
    b'{"error": {"message": "too many open connections; retry later", "type": "unavailable", "code": 503}}'
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_BUSY_BODY)}\r\n\r\n".encode()
    + _BUSY_BODY
)


def guarded_h11(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header deadline and a connection cap (pass as Config(http=...))."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(_BUSY)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                if self._header_timer is None and not self.transport.is_closing():
                    self._arm()  # a new request has begun: its headers now have a deadline
            else:
                self._disarm()  # headers complete (or the connection is done with)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            # The keep-alive timer (http.keep_alive_s) takes over until the next request's first byte.
            self._disarm()
            super().on_response_complete()

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol
