"""Stream health in Prometheus (label ``provider``; no ``service`` label)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTED = Gauge("cryptolens_stream_connected", "1 while the exchange stream is connected and subscribed",
                  ["provider"])
FRAMES = Counter("cryptolens_stream_frames_total", "Frames received from an exchange stream, by kind "
                 "(trade, kline, heartbeat, control, ignored, error, shutdown, malformed)", ["provider", "kind"])
RECONNECTS = Counter("cryptolens_stream_reconnects_total", "Times an exchange stream connection was lost "
                     "(or retired before a limit) and opened again", ["provider"])
LAG = Gauge("cryptolens_stream_lag_seconds", "Receive time minus exchange event time of the newest frame",
            ["provider"])
LATE = Counter("cryptolens_stream_late_trades_total", "Trades dropped because their bar closed more than the "
               "grace before (REST repair has them)", ["provider"])
GAPS = Counter("cryptolens_stream_sequence_gaps_total", "Frames showing lost messages (Coinbase trade id "
               "jumps, sequence going back); each triggers a REST repair", ["provider"])
