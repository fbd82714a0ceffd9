"""Offline analysis of the request log (`taskrouter-analyze`). Not imported by the running service."""
