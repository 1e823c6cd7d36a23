"""mtkd first-party plugin: glue (in progress)."""
