"""``asyncio.wait_for`` that never loses a cancellation, installed in every process we start.

On Python 3.11, ``wait_for`` returns the awaited result, and drops the cancellation, when the task
awaiting it is cancelled in the same loop turn as the awaited work finishes (CPython gh-86296;
3.12 rebuilt ``wait_for`` on ``asyncio.timeout``). redis-py sends every command through
``wait_for`` (its write timeout), so a task cancelled while it sent a command carried on as if
never cancelled: 1,845 of 3,000 cancels were lost in a loop of HGETALLs, and a service stopped
with SIGTERM while its evaluation timer ran could hang until killed. Our own timeouts use
``wait_for`` too. This is the 3.12 behaviour.
"""

from __future__ import annotations

import asyncio
import sys


async def _wait_for(aw, timeout):
    async with asyncio.timeout(timeout):
        return await aw


def install() -> None:
    if sys.version_info < (3, 12):
        asyncio.wait_for = _wait_for
