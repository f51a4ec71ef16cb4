"""Identities and certificates: Ed25519 keys, the agent key store, (later) the libvirt CA."""
