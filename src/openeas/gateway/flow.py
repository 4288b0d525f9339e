"""Reasons a client connection stops reading (bits of `ClientConnection.paused`).

Reading resumes only when no reason is left, so each party can pause and resume on its own.
"""

PAUSE_PIPELINE = 1  # an earlier request on the connection is still being answered
PAUSE_UPSTREAM = 2  # the instance connection's write buffer is full
PAUSE_BUFFER = 4  # body bytes are piling up while the instance connection opens
PAUSE_UPGRADE = 8  # a WebSocket upgrade is waiting for its 101: what follows is not HTTP (tunnel.py)
