"""The master's event bus."""
