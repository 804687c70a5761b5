from __future__ import annotations

import asyncio
import threading

from agentvisor.server.inbox_waiters import InboxWaiters


def test_a_notification_between_the_look_and_the_wait_is_not_lost():
    async def scenario() -> bool:
        waiters = InboxWaiters()
        waiters.bind(asyncio.get_running_loop())
        seen = waiters.version(7)  # the request reads the version, looks at the empty inbox...
        threading.Thread(target=waiters.notify, args=([7],)).start()  # ...a message comes...
        await asyncio.sleep(0.05)
        return await waiters.wait(7, 5.0, seen)  # ...and the wait returns at once

    assert asyncio.run(asyncio.wait_for(scenario(), 1.0)) is True


def test_a_waiter_is_woken_by_a_notification_for_its_agent_only():
    async def scenario() -> tuple[bool, bool]:
        waiters = InboxWaiters()
        waiters.bind(asyncio.get_running_loop())
        mine = asyncio.create_task(waiters.wait(1, 2.0, waiters.version(1)))
        other = asyncio.create_task(waiters.wait(2, 0.3, waiters.version(2)))
        await asyncio.sleep(0.05)
        waiters.notify([1])
        return await mine, await other

    assert asyncio.run(scenario()) == (True, False)
