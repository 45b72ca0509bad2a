"""The event loop: virtual time, determinism, realtime pacing and injection."""

from __future__ import annotations

import threading
import time

from kernel.clock import EventLoop, RealtimeLoop


def test_events_run_in_time_order_and_ties_in_scheduling_order():
    loop = EventLoop()
    seen = []
    for when, tag in [(30, "c"), (10, "a"), (30, "d"), (20, "b")]:
        loop.call_at(when, seen.append, tag)
    loop.run()
    assert seen == ["a", "b", "c", "d"]
    assert loop.now_ns == 30


def test_run_until_stops_at_the_horizon_and_leaves_later_events():
    loop = EventLoop()
    seen = []
    loop.call_at(5, seen.append, 5)
    loop.call_at(50, seen.append, 50)
    loop.run(until_ns=20)
    assert seen == [5] and loop.now_ns == 20
    loop.run()
    assert seen == [5, 50]


def test_cancelled_timer_never_fires():
    loop = EventLoop()
    seen = []
    timer = loop.call_at(10, seen.append, "x")
    timer.cancel()
    loop.run()
    assert seen == []


def test_realtime_loop_paces_virtual_time_to_the_wall_clock():
    loop = RealtimeLoop(speed=1.0)
    fired = []
    loop.call_at(30_000_000, lambda _: fired.append(time.monotonic()))  # 30 ms
    t0 = time.monotonic()
    loop.run(until_ns=40_000_000)  # a realtime loop idles until its horizon
    assert fired and fired[0] - t0 >= 0.025
    assert time.monotonic() - t0 >= 0.035


def test_realtime_loop_accepts_events_injected_from_another_thread():
    loop = RealtimeLoop()
    got = []

    def inject():
        time.sleep(0.02)
        loop.call_soon_threadsafe(lambda arg: (got.append(arg), loop.stop()), "hello")

    threading.Thread(target=inject).start()
    loop.run(until_ns=2_000_000_000)
    assert got == ["hello"]
    assert loop.now_ns < 2_000_000_000


def test_resync_forgets_the_lag_a_realtime_loop_built_up():
    loop = RealtimeLoop()
    time.sleep(0.05)  # the loop ran nothing: virtual time is 50 ms behind the wall clock
    assert loop.wall_virtual_ns() - loop.now_ns >= 40_000_000
    loop.resync()
    assert loop.wall_virtual_ns() - loop.now_ns < 40_000_000
