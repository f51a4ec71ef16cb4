"""The master's two ZeroMQ channels: the request channel (ROUTER) and the publisher (PUB), with session keys."""
