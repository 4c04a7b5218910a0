"""THE seam where access decisions live: principal, scopes, roles, organisation boundaries."""
