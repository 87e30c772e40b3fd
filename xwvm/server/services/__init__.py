"""Plain functions behind the HTTP API: one module per resource, callable from tests."""
