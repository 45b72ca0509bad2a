"""The hypervisor: guest VMs on a host kernel's machine.

* `vm.py` — `Hypervisor` and `Vm`: guests as kernels on the host's machine,
  their lifecycle, and the `VmControl` hook the host's shell reaches;
* `credit.py` — the vCPU scheduler (Xen's credit scheduler) that grants
  guests' vCPUs host CPU time.

It builds on the kernel; the kernel never imports it.
"""

from kernel.hypervisor.credit import CreditScheduler, Domain
from kernel.hypervisor.vm import Hypervisor, Vm, VmError, VmInfo, VmState

__all__ = ["CreditScheduler", "Domain", "Hypervisor", "Vm", "VmError", "VmInfo", "VmState"]
