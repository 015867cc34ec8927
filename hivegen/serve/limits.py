"""The bounds on what one container may ask of the server."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# A request body is a few names and a commit id: anything larger is not one of ours.
MAX_BODY = 16 * 1024
# Per container: bursts of this many requests, refilled at RATE per second.
BURST = 30
RATE = 2.0
# Proposals of one agent waiting for the operator: the manager cannot bury the queue.
MAX_PENDING_PER_AGENT = 8
# Requests of one container held open waiting for a decision.
MAX_WAITERS = 4
# The longest a wait may last; the client asks again after it.
MAX_WAIT = 300.0
# Connections one container's socket holds at once (its waits and a few more), and a
# dashboard listener's; over them a connection is answered 503 and closed (conns.py).
AGENT_CONNECTIONS = 8
DASHBOARD_CONNECTIONS = 64
# All agents' connections together: the fd limit less this reserve, within these.
FD_RESERVE = 256
MIN_AGENT_POOL = 16
MAX_AGENT_POOL = 4096
# The fd limit the server raises itself to when the hard limit is unlimited.
NOFILE_WANTED = 65536
# Seconds a connection has to send a request's headers (after it is accepted, or after
# its last answer), and a request its body.
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0


@dataclass(slots=True)
class TokenBucket:
    burst: float = BURST
    rate: float = RATE
    tokens: float = BURST
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0 if a request may go ahead (and count it), else seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
