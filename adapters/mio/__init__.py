"""МИО (local executive bodies): REST/JSON, shelter placement and social-legal help."""
