"""What a sharing run leaves for people to read (`drivers/vgpu/sharing`).

A `SharedDevice` holds only what scheduling needs: the atoms in flight.
Everything kept for afterwards is a `Recorder`'s, which the device's owner
attaches or not:

* the trace window: the atoms launched within it, as `TraceAtom`s once done
  (the Chrome trace of an experiment);
* the launch log (with `record_launches`): every launch's stream, time,
  blocks, mask, priority and dispatch order;
* the clock log: every clock requested, and when it takes effect;
* per-atom figures: each atom's stream, launch time, TPC count and whether
  it was stolen, by atom id (a device whose engine reuses ids keeps the
  latest atom of each id).

All of it grows with the run, as a record does: the booted vGPU driver,
which runs for as long as the machine does, attaches none.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class TraceAtom:
    """One atom, for the Chrome trace."""

    stream: int
    kernel: str
    launch_ns: int
    done_ns: int
    mask: int
    priority: int
    stolen: bool


class Recorder:
    """The trace window's atoms, the launch and clock logs, and per-atom figures."""

    def __init__(
        self, trace_window_ns: tuple[int, int] | None = None, *, record_launches: bool = False
    ) -> None:
        """`trace_window_ns`: record the atoms launched within it (for a trace);
        `record_launches`: keep the launch log."""
        self.trace_window_ns = trace_window_ns
        self.record_launches = record_launches
        self.trace_atoms: list[TraceAtom] = []
        #: Every launch: stream, time, first block, end block, mask, priority, order.
        self.launch_log: list[tuple[int, ...]] = []
        #: Every clock request: (effective time, MHz).
        self.clock_log: list[tuple[int, int]] = []
        # Per atom id: its stream (None: launched beside the device's
        # policy), launch time, TPC count, and whether it was stolen.
        self.atom_owner: list[Any] = []
        self.atom_launch_ns: list[int] = []
        self.atom_tpcs: list[int] = []
        self.atom_stolen: list[bool] = []
        self._in_window: dict[int, int] = {}  # atoms in flight launched in the window: priority

    def launched(
        self,
        atom: int,
        stream: Any,
        now_ns: int,
        begin: int,
        end: int,
        mask: int,
        priority: int,
        order: int,
        stolen: bool,
    ) -> None:
        if self.record_launches:
            self.launch_log.append((stream.index, now_ns, begin, end, mask, priority, order))
        grow = atom + 1 - len(self.atom_owner)
        if grow > 0:  # a new id; ids launched beside the device's policy stay blank
            self.atom_owner += [None] * grow
            self.atom_launch_ns += [0] * grow
            self.atom_tpcs += [0] * grow
            self.atom_stolen += [False] * grow
        self.atom_owner[atom] = stream
        self.atom_launch_ns[atom] = now_ns
        self.atom_tpcs[atom] = mask.bit_count()
        self.atom_stolen[atom] = stolen
        window = self.trace_window_ns
        if window is not None and window[0] <= now_ns < window[1]:
            self._in_window[atom] = priority

    def completed(self, atom: int, stream: Any, now_ns: int, mask: int) -> None:
        """An atom of `stream` completed now (its kernel is still the stream's)."""
        priority = self._in_window.pop(atom, None)
        if priority is not None:
            launch_ns, stolen = self.atom_launch_ns[atom], self.atom_stolen[atom]
            name = stream.desc.name
            self.trace_atoms.append(
                TraceAtom(stream.index, name, launch_ns, now_ns, mask, priority, stolen)
            )

    def clock_set(self, effective_ns: int, clock_mhz: int) -> None:
        self.clock_log.append((effective_ns, clock_mhz))
