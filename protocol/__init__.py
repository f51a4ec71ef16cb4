"""What the master and the agents agree on: envelope, codec, crypto, schemas, tags."""

from .version import VERSION

__all__ = ["VERSION"]
