"""The system under test: a booted realtime kernel with the inference server
and its co-located load, run on a thread of its own (`exp/loadgen`).

The kernel's event loop is a `RealtimeLoop` (kernel/clock.py): virtual time
is paced to the wall clock, so LoadGen's wall-clock latencies are the
kernel's virtual ones plus whatever the host adds.  Nothing stretches time
to hide a slow host: a monitor event samples how far virtual time is behind
the wall clock (`LagMeter`), and the results report it.

The GPU timeline is recorded by a small task that asks the vGPU driver to
trace (`trace_start`) when LoadGen starts, and at the end takes the trace
(`trace_stop`) and powers the kernel off.
"""

from __future__ import annotations

import gc
import math
import threading
from array import array
from typing import Any

from exp.loadgen.ledger import Ledger
from exp.loadgen.port import QueryPort
from exp.loadgen.settings import TRAIN_PREFIX, ServeSettings, policy_module
from kernel import Kernel, KernelConfig
from kernel.config import BootPlan
from kernel.ipc import Notification
from kernel.programs import DEFAULT_PROGRAMS
from kernel.traps import Poweroff, Wait

#: Programs `malv serve` starts, registered here too so that a source tree
#: not installed again since they were added still finds them.
PROGRAMS = {"inference-server": "inference_server", "gpu-train": "gpu_train"}
MONITOR_PERIOD_NS = 10_000_000
BURN_SECONDS = 1_000_000  # gpu-burn runs until the kernel powers off
READY_TIMEOUT_S = 300.0  # a cold numba cache compiles the engine first
STOP_TIMEOUT_S = 10.0


class ServeError(RuntimeError):
    """The system under test could not be brought up; the message says why."""


#: The lag histogram's bins: 0.1 ms wide below 100 ms, then 10 ms wide to
#: a minute (the last bin also holds what lags more).
FINE_NS, FINE_BINS = 100_000, 1_000
COARSE_NS, COARSE_BINS = 10_000_000, 5_990


class LagMeter:
    """How far virtual time is behind the wall clock, sampled while measuring.
    The samples go into a histogram of fixed size (47 KB), however long the
    run: its percentiles are the lower edges of their bins (within 0.1 ms
    below 100 ms, 10 ms above); the maximum and mean are exact."""

    def __init__(self, period_ns: int = MONITOR_PERIOD_NS) -> None:
        self.period_ns = period_ns
        self.samples = 0
        self.behind = 0  # samples more than a period behind: the host did not keep up
        self.total_ns = 0
        self.max_ns = 0
        self.bins = array("q", bytes(8 * (FINE_BINS + COARSE_BINS)))

    def sample(self, loop: Any) -> None:
        lag_ns = max(0, loop.wall_virtual_ns() - loop.now_ns)
        self.samples += 1
        self.behind += lag_ns > self.period_ns
        self.total_ns += lag_ns
        self.max_ns = max(self.max_ns, lag_ns)
        fine = lag_ns // FINE_NS
        coarse = FINE_BINS + min(COARSE_BINS - 1, (lag_ns - FINE_NS * FINE_BINS) // COARSE_NS)
        self.bins[fine if fine < FINE_BINS else coarse] += 1

    def percentile_ms(self, p: float) -> float:
        """The `p`th percentile of the lag samples (nearest rank), in ms; 0 without samples."""
        if not self.samples:
            return 0.0
        rank = max(1, math.ceil(p / 100 * self.samples))
        seen, b = 0, 0
        while seen + self.bins[b] < rank:
            seen += self.bins[b]
            b += 1
        edge = b * FINE_NS if b < FINE_BINS else FINE_NS * FINE_BINS + (b - FINE_BINS) * COARSE_NS
        return min(edge, self.max_ns) / 1e6

    def report(self) -> dict[str, Any]:
        mean_ns = self.total_ns / self.samples if self.samples else 0.0
        return {
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "max_ms": self.max_ns / 1e6,
            "mean_ms": mean_ns / 1e6,
            "samples": self.samples,
            "sample_period_ms": self.period_ns / 1e6,
            "behind_share": self.behind / self.samples if self.samples else 0.0,
            "kept_up": self.behind == 0,
        }


def register_programs() -> None:
    from userland import inference

    for name, function in PROGRAMS.items():
        DEFAULT_PROGRAMS.register(name, getattr(inference, function))


class ServingKernel:
    """A realtime kernel serving LoadGen's queries; `start`, then `stop`."""

    def __init__(self, settings: ServeSettings, ledger: Ledger) -> None:
        register_programs()
        self.settings = settings
        self.console: list[str] = []
        plan = BootPlan.standard(settings.gpu, gpu_args=(f"{settings.driver_wake_us:g}",))
        config = KernelConfig(
            seed=settings.seed, gpu=settings.gpu, headless=True, realtime=True, plan=plan
        )
        self.kernel = k = Kernel(config, console=self.console.append)
        self.port = QueryPort(k, ledger)
        self.lag = LagMeter()
        self.measuring = False
        self.trace_events: list[dict[str, Any]] = []
        self._stop = Notification()
        self._frozen = False  # `start` froze the collector's view (gc.freeze)
        self._tracing = False
        self._thread = threading.Thread(target=self._run, name="malvos-kernel", daemon=True)
        try:
            self._boot()
        except BaseException:
            k.shutdown()
            raise

    def _boot(self) -> None:
        """Load the compiled GPU code; boot, insert the policy's module, start
        the server and the co-located load."""
        from drivers.vgpu.warm import compile_everything

        # Loaded (or compiled) now, not by the first query's launch, which
        # would stall the realtime kernel for seconds while LoadGen measures.
        compile_everything()
        k, settings = self.kernel, self.settings
        k.boot()
        if settings.policy is not None:
            k.mlaas.insmod(policy_module(settings.policy))
        caps = k.server_caps()
        self.port.server_pid = k.spawn(
            settings.server, ("-s", str(settings.server_streams), settings.model),
            caps={**caps, "queries": self.port, "irq": self.port.irq},
        )  # fmt: skip
        for item in settings.colocate:
            if item == "gpu-burn":
                k.spawn("gpu-burn", (str(BURN_SECONDS),))
            else:
                k.spawn("gpu-train", (item[len(TRAIN_PREFIX) :],))

    # -- the kernel thread ------------------------------------------------------------

    def _run(self) -> None:
        k = self.kernel
        k.loop.call_later(MONITOR_PERIOD_NS, self._monitor)
        try:
            k.machine.run()
        finally:
            k.halt(k.halt_reason or "the event loop stopped")

    def _monitor(self, _arg: Any = None) -> None:
        if self.measuring:
            self.lag.sample(self.kernel.loop)
        self.port.check_server()
        if not self.kernel.halted:
            self.kernel.loop.call_later(MONITOR_PERIOD_NS, self._monitor)

    def _trace_gpu(self, proc):
        from userland.gpulib import gpu_request

        yield from gpu_request(proc.caps["gpu"], "trace_start")
        yield Wait(proc.caps["stop"])
        answer = yield from gpu_request(proc.caps["gpu"], "trace_stop")
        self.trace_events = list(answer.msg.payload.events)
        yield Poweroff()

    def _begin(self, _arg: Any = None) -> None:
        k = self.kernel
        k.loop.resync()  # the lag is measured from here, not from boot and warm-up
        k.spawn(self._trace_gpu, caps={**k.server_caps(), "stop": self._stop}, name="gpu-trace")
        self._tracing = True
        self.measuring = True

    def _end(self, _arg: Any = None) -> None:
        self.measuring = False
        if self._tracing:
            self.kernel.raise_irq(self._stop, 1)  # the trace task powers off
        else:
            self.kernel.halt("poweroff by malv serve")

    # -- the host side ---------------------------------------------------------------

    def start(self) -> None:
        """Run the kernel and wait until the server has loaded its models;
        then record the GPU timeline and the lag."""
        self._thread.start()
        if not self.port.is_ready.wait(READY_TIMEOUT_S):
            self.stop()
            raise ServeError(f"the inference server was not ready after {READY_TIMEOUT_S:g} s")
        if self.port.down is not None:
            self.stop()
            said = "".join(self.console).strip().splitlines()
            raise ServeError(
                f"the inference server did not start: {said[-1] if said else self.port.down}"
            )
        # What boot and warm-up made lives as long as the kernel: out of the
        # collector's sight, a full collection does not stall the realtime
        # kernel for a tenth of a second every few seconds (`stop` undoes it).
        gc.collect()
        gc.freeze()
        self._frozen = True
        self.kernel.loop.call_soon_threadsafe(self._begin)

    def post(self, callback: Any, arg: Any = None) -> None:
        """Run `callback(arg)` on the kernel thread."""
        self.kernel.loop.call_soon_threadsafe(callback, arg)

    def stop(self) -> None:
        """Take the trace, power the kernel off, and release it."""
        k = self.kernel
        if self._frozen:
            gc.unfreeze()  # the host process goes on: its garbage is collectable again
            self._frozen = False
        if self._thread.is_alive():
            self.post(self._end)
            self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():  # the trace task did not power off: halt
            self.post(lambda _arg: k.halt("poweroff by malv serve"))
            self._thread.join(STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            k.machine.shutdown()
