"""mtkd first-party plugin: hf (in progress)."""
