"""Small randomly initialised models built from configs, for tests and for trying the app without downloads."""
