"""The speaker's loop thread, shared by the actor and by the lab's bare membership endpoints."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from raylb.actors.speaker.core import SpeakerCore
from raylb.actors.speaker.heartbeat import UdpTransport

log = logging.getLogger(__name__)

# Half the heartbeat interval: a heartbeat is sent at most 25 ms late and a death is noticed
# at most 25 ms after its deadline, small against dead_after_s (0.3 s).
LOOP_INTERVAL_S = 0.025
# After an exception in the loop, pause this long so a persistent error cannot spin a core.
ERROR_PAUSE_S = 0.1


def run(core: SpeakerCore, transport: UdpTransport, *, stop: threading.Event, errors: Counter[str]) -> None:
    """Step `core` until `stop` is set: at its next wakeup, when a datagram arrives, or after
    LOOP_INTERVAL_S. An error is counted in `errors` and logged; the loop never dies."""
    while not stop.is_set():
        try:
            core.step(time.monotonic())
            wakeup_s = core.next_wakeup_s()
            timeout_s = LOOP_INTERVAL_S if wakeup_s is None else wakeup_s - time.monotonic()
            transport.wait(min(LOOP_INTERVAL_S, max(0.0, timeout_s)))
        except Exception as err:  # noqa: BLE001 - the loop never dies
            errors[type(err).__name__] += 1
            log.exception("speaker %s: loop step failed", core.node)
            stop.wait(ERROR_PAUSE_S)
