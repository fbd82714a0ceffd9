"""Classification: the engine that runs the encoder (`engine`), the dynamic batcher in front of it
(`batching`, with its admission bound in `admission`), the checks on a request before it is scored
(`request`), and the one "prepare, submit, decide" path every front uses (`classifier`)."""
