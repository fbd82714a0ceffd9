"""Generated API stubs (package taskrouter.v1). Regenerate with `make proto`; never edit by hand."""
