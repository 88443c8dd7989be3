"""rclpy's MultiThreadedExecutor, without the busy loop that starved the control tick of the GIL.

Every subscription carries QoS event handlers (rclpy's default warnings about an incompatible QoS or
type). While a subscription's message waits for a worker, rclpy leaves the subscription out of its
wait set but keeps its event handlers in; with Fast DDS such a wait set returns at once with nothing
ready, so the spinning thread rebuilt and re-waited on it thousands of times a second. Measured with
the residual graph of tests/test_residual_node.py (bench/residual_loop.py): one core at 97 %, the
control tick's 30 ms residual wait stretched to 0.4-1.7 s, 60-80 % of residuals in time. Leaving a
subscription's event handlers out whenever the subscription is out: 13 % of a core, tick p99 6 ms,
every residual in time. The QoS warnings still come, once the subscription is back in the wait set.
"""

from __future__ import annotations

import weakref

from rclpy import executors
from rclpy.event_handler import EventHandler


class MultiThreadedExecutor(executors.MultiThreadedExecutor):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._event_owner: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # handler -> subscription

    def can_execute(self, entity) -> bool:
        if not super().can_execute(entity):
            return False
        if not isinstance(entity, EventHandler):
            return True
        if entity not in self._event_owner:
            self._find_owners(entity)
        owner = self._event_owner[entity]
        return owner is None or super().can_execute(owner)

    def _find_owners(self, handler: EventHandler) -> None:
        for node in self.get_nodes():
            for subscription in node.subscriptions:
                for owned in subscription.event_handlers:
                    self._event_owner[owned] = subscription
        self._event_owner.setdefault(handler, None)  # a publisher's: always waited on, as in rclpy
