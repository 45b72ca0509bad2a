"""The hypervisor: guest VMs on a host kernel's machine.

* `vm.py` — `Hypervisor` and `Vm`: guests as kernels on the host's machine,
  their lifecycle, and the `VmControl` hook the host's shell reaches;
* `credit.py` — the vCPU scheduler (Xen's credit scheduler) that grants
  guests' vCPUs host CPU time;
* `snapshot.py` — a VM saved to a file and restored: its inputs journaled
  (`journal.py`) and replayed (`replay.py`), the file sealed with a host key
  (`seal.py`) and checked value by value against a declared schema (`schema.py`).

It builds on the kernel; the kernel never imports it.
"""

from kernel.hypervisor.credit import CreditScheduler, Domain
from kernel.hypervisor.vm import Hypervisor, Vm, VmError, VmInfo, VmState

__all__ = ["CreditScheduler", "Domain", "Hypervisor", "Vm", "VmError", "VmInfo", "VmState"]
