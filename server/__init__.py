"""The gRPC classification service: batching, routing and (later) targets. Imports models, never training."""
