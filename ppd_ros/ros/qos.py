"""QoS profiles for the node's subscriptions and publishers, built from parameter strings."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY_CHOICES = ("best_effort", "reliable")

_RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}


def make_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last ``depth``, volatile QoS with the given reliability ("best_effort" | "reliable")."""
    if reliability not in _RELIABILITY:
        raise ValueError(f"QoS reliability {reliability!r} is not one of {RELIABILITY_CHOICES}")
    if depth < 1:
        raise ValueError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=_RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )
