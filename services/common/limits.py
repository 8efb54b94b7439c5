"""The caps on work one request may cause, shared by every service (see docs/provenance.md).

A window wider than MAX_WINDOW_BARS bars of its interval is refused with RESOURCE_EXHAUSTED naming
the cap; a fetch-through never asks a provider for more than MAX_FETCH_BARS bars at once; GetBars
answers at most MAX_PAGE_BARS bars per response and pages the rest. Alert rule windows obey the
same window cap.
"""

from __future__ import annotations

MAX_WINDOW_BARS = 1_051_200  # two years of 1-minute bars; all daily history since 2010 is ~6,000
MAX_FETCH_BARS = MAX_WINDOW_BARS
MAX_PAGE_BARS = 10_000
DEFAULT_PAGE_BARS = 1_000
MAX_FUTURE_MS = 24 * 3600 * 1000  # a bar or a window end more than a day ahead of the clock is refused
