"""mtkd first-party plugin: distill (in progress)."""
