"""The gRPC front: the servicer (protobuf <-> domain calls) and its registration."""
