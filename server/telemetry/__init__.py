"""What the service observes about its traffic: one record per request (`core`), finished into the
Prometheus metrics (`metrics`, merged across workers by `shared_metrics`), the console's last 24 h
(`recent`) and the optional JSON-lines request log (`request_log`). It knows no domain module: each
producer fills its own fields of the record."""

from server.telemetry.core import (
    ATTEMPT_OK,
    CLASSIFYING_APIS,
    OK,
    PLANNED_APIS,
    SERVED_APIS,
    SKIPPED,
    RequestRecord,
    Telemetry,
    attempt_failed,
)

__all__ = [
    "ATTEMPT_OK",
    "CLASSIFYING_APIS",
    "OK",
    "PLANNED_APIS",
    "SERVED_APIS",
    "SKIPPED",
    "RequestRecord",
    "Telemetry",
    "attempt_failed",
]
