"""The operator's terminal view of /pld/episode/status: a live status line, and one line per episode
as it ends."""

from __future__ import annotations

import json
import sys
import threading

from rclpy.node import Node
from std_msgs.msg import String


class StatusLine(Node):
    def __init__(self, out=sys.stdout, node_name: str = "status_line"):
        super().__init__(node_name)
        self._out = out
        self._live = out.isatty()
        self._lock = threading.Lock()
        self.status: dict | None = None
        self._reported = 0  # episodes whose line is printed
        self.create_subscription(String, "/pld/episode/status", self._on_status, 10)

    @property
    def episodes_done(self) -> int:
        with self._lock:
            return sum(self.status["outcomes"].values()) if self.status else 0

    def _on_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        with self._lock:
            self.status = status
        done = sum(status["outcomes"].values())
        if done > self._reported and status["last_episode"]:  # the episode's own line, once
            self._reported = done
            last = status["last_episode"]
            self._print(f"episode {done}: {last['outcome']}  after {last['steps']} steps "
                        f"(probe prefix {last['probe_steps']})  success rate {100 * status['success_rate']:.0f}%",
                        final=True)
        if self._live:
            fault = f"  FAULT: {status['fault']}" if status["fault"] else ""
            residual = (f"  residual {status['residual_applied']} applied, {status['residual_missing']} missed"
                        if "residual_applied" in status else "")  # residual and hybrid modes
            self._print(f"[{status['mode']}] episode {status['episode']} {status['state']:<17} step {status['step']:>4}"
                        f"  success {100 * status['success_rate']:.0f}%  tick p50 {status['tick_ms_p50']} ms"
                        f"{residual}{fault}", final=False)

    def _print(self, text: str, final: bool) -> None:
        if self._live:
            self._out.write("\r\033[K" + text + ("\n" if final else ""))
        elif final:
            self._out.write(text + "\n")
        self._out.flush()
