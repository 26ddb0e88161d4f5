"""HTTP API: app factory, dependencies, routes per resource and problem+json handlers."""
