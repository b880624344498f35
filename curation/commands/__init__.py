"""One module per `curate` sub-command; each defines ``register(app)``."""
