"""mtkd first-party plugin: samplers (in progress)."""
