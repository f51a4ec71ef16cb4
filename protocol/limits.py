"""Size limits shared by both ends; one place so that each default is written once."""

from dataclasses import dataclass

MAX_ID_LENGTH = 128
MAX_TAG_LENGTH = 512
MAX_FUNCTION_NAME = 128


@dataclass(frozen=True)
class Limits:
    """Bounds on what a daemon accepts from the network.

    ``max_frame`` is checked by our decoder with a logged reason; libzmq's own
    MAXMSGSIZE is set to twice that so that a far larger frame is dropped by
    the transport before Python ever allocates it.
    """

    max_frame: int = 4 * 1024 * 1024
    max_batch: int = 1000
    freshness_seconds: float = 120.0
    # Nonces each replay cache holds (about 90 bytes each, so 47 MB when full): past it, frames
    # are refused until entries expire, since one let through unrecorded could be replayed.
    # Entries live 2 x window seconds, so this admits about 2,200 frames a second, sustained:
    # 1,000 agents' heartbeats, returns and event batches (bench/swarm.py) with room to spare.
    max_nonces: int = 524_288

    @property
    def transport_max(self) -> int:
        """The hard cap given to libzmq (ZMQ_MAXMSGSIZE)."""
        return self.max_frame * 2


DEFAULT_LIMITS = Limits()
