"""mtkd first-party plugin: loggers (in progress)."""
