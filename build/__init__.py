"""Build tools: the static site (build.site) and the wheels it ships (build.wheels)."""
