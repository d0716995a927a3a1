"""The render server process: one per session; imports nothing from the hub."""
