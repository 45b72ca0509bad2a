"""The credit scheduler shares host CPUs among guests' vCPUs by weight and cap."""

from __future__ import annotations

import pytest
from scheduled_guests import guests

from kernel.hypervisor.credit import ACCOUNT_PERIOD_NS, CreditScheduler

SECOND = 1_000_000_000


def test_three_guests_of_two_busy_vcpus_take_three_times_as_long_as_one_alone():
    machine, _, _, finished = guests([(256, 0, 2)], work_ms=300)
    machine.run()
    alone_ns = max(finished[0])
    machine.shutdown()
    machine, _, _, finished = guests([(256, 0, 2)] * 3, work_ms=300)
    machine.run()
    together_ns = max(max(f) for f in finished)
    machine.shutdown()
    # 6 vCPUs on 2 host CPUs: each guest gets a third of the host; within 5 %.
    assert together_ns / alone_ns == pytest.approx(3.0, rel=0.05)
    # and fair: no guest finishes far ahead of the others
    assert min(min(f) for f in finished) / together_ns > 0.9


def test_weights_two_to_one_give_cpu_time_two_to_one_under_contention():
    machine, scheduler, kernels, _ = guests([(512, 0, 2), (256, 0, 2)])
    machine.run(until=3 * SECOND)
    heavy, light = (scheduler.domains[k].used_ns for k in kernels)
    # the first accounting period is shared evenly (nobody has credit yet): within 5 %
    assert heavy / light == pytest.approx(2.0, rel=0.05)
    assert heavy + light >= 0.99 * 2 * 3 * SECOND  # work-conserving: no host CPU idles
    machine.shutdown()


def test_a_vm_capped_at_50_percent_gets_at_most_half_a_cpu_even_on_an_idle_host():
    machine, scheduler, kernels, _ = guests([(256, 50, 2)])
    machine.run(until=3 * SECOND)
    share = scheduler.domains[kernels[0]].used_ns / (3 * SECOND)
    # two busy vCPUs, two idle host CPUs, and still no more than half of one
    assert 0.45 < share <= 0.50
    machine.shutdown()


def test_a_cap_holds_beside_an_uncapped_guest_that_takes_the_rest():
    machine, scheduler, kernels, _ = guests([(256, 50, 1), (256, 0, 1)])
    machine.run(until=3 * SECOND)
    capped, free = (scheduler.domains[k].used_ns / (3 * SECOND) for k in kernels)
    assert capped <= 0.50 and free >= 0.99
    machine.shutdown()


def test_the_schedule_is_deterministic():
    def run() -> list[int]:
        machine, scheduler, kernels, finished = guests(
            [(512, 0, 2), (256, 120, 2), (256, 0, 1)], work_ms=200
        )
        machine.run()
        out = [scheduler.domains[k].used_ns for k in kernels] + [t for f in finished for t in f]
        machine.shutdown()
        return out + [scheduler.grants]

    assert run() == run()


def test_an_idle_machine_has_no_pending_accounting_ticks():
    machine, scheduler, _, finished = guests([(256, 0, 1)], work_ms=100)
    machine.run()
    assert scheduler.tick is None and machine.now_ns < 100_100_000 and finished[0]
    machine.shutdown()


def test_credit_refills_each_period_in_proportion_to_weight():
    machine, scheduler, kernels, _ = guests([(300, 0, 2), (100, 0, 2)])
    machine.run(until=ACCOUNT_PERIOD_NS)  # the first accounting
    first, second = (scheduler.domains[k] for k in kernels)
    # 2 host CPUs x 30 ms, 3:1; less what each ran since
    assert first.credit_ns + first.used_ns == pytest.approx(45_000_000, abs=10_000_000)
    assert second.credit_ns + second.used_ns == pytest.approx(15_000_000, abs=10_000_000)
    machine.shutdown()


@pytest.mark.parametrize(
    "weight, cap, message",
    [(0, 0, "weight must be"), (256, -1, "cap must be"), (256, 201, "cap must be"),
     (True, 0, "weight must be")],
)  # fmt: skip
def test_bad_weights_and_caps_are_refused(weight, cap, message):
    machine, scheduler, _, _ = guests([])
    k = machine.kernel(name="x", gpu=None, cpu_provider=scheduler)
    with pytest.raises(ValueError, match=message):
        scheduler.add(k, "x", weight, cap)
    machine.shutdown()


def test_a_scheduler_needs_host_cpus():
    machine, _, _, _ = guests([])
    with pytest.raises(ValueError, match="cpus must be a positive integer"):
        CreditScheduler(machine, 0)
