"""One module per `train` sub-command; each defines ``register(app)``."""
