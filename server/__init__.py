"""The taskrouter service: gRPC and HTTP fronts, classification with dynamic batching, router
definitions and their registry, model targets and the fallback chain, telemetry. Imports `models`,
never `training`. docs/ARCHITECTURE.md maps the modules."""
