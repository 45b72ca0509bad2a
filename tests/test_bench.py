"""Benchmarks report figures in the one format (`bench.report.Figure`).
They are run here only briefly, for their shape: targets are checked by
`malv bench`, never by timed assertions in tests."""

from __future__ import annotations

from bench import boot, sim
from drivers.vgpu.policies import POLICY_NAMES


def test_boot_bench_reports_the_median_and_p95_in_ms():
    figures = {f.name: f for f in boot.run(quick=True)}
    assert set(figures) == {"boot.headless_median", "boot.headless_p95"}
    assert all(f.unit == "ms" and f.value > 0 for f in figures.values())
    assert figures["boot.headless_median"].value <= figures["boot.headless_p95"].value


def test_sim_bench_reports_each_policy_compiled_against_the_loop_interpreted():
    figures = sim.run(seconds=0.02)
    cpu = [f for f in figures if f.unit == "sim s per CPU s"]
    assert [f.name.split()[0] for f in cpu] == [f"sim.stacking_{p}" for p in POLICY_NAMES]
    assert all(f.value > 0 and f.baseline and f.baseline > 0 for f in cpu)
    # Every policy has a compiled form, and it ran.
    assert "sim.stacking_lithos [compiled]" in [f.name for f in cpu]
    assert "sim.stacking_tgs [compiled]" in [f.name for f in cpu]
    assert all(f.target == ">= 150" for f in cpu)


def test_vm_bench_reports_a_guest_s_boot_beside_a_bare_kernel_s():
    from bench import vm

    figures = {f.name: f for f in vm.run(quick=True)}
    assert {
        "vm.guest_boot_median", "vm.eight_guests_start", "vm.virtqueue_request",
        "vm.hypercall_round_trip", "vm.snapshot_100ms_old", "vm.restore_100ms_old",
        "vm.snapshot_100ms_old_size", "vm.virtqueue_gpu_launch",
        "vm.virtqueue_gpu_launch_virtual", "vm.virtqueue_gpu_launch_layer_virtual",
    } <= set(figures)  # fmt: skip
    boot_figure = figures["vm.guest_boot_median"]
    assert boot_figure.unit == "ms" and boot_figure.value > 0 and boot_figure.baseline > 0
    assert boot_figure.target == "<= 3x"
    assert figures["vm.virtqueue_request"].baseline > 0
    assert figures["vm.hypercall_round_trip"].target == "<= 2x"
    assert figures["vm.hypercall_round_trip"].baseline > 0
    assert figures["vm.snapshot_100ms_old_size"].value > 0
    launch = figures["vm.virtqueue_gpu_launch"]
    assert launch.unit == "launches/s" and launch.value > 0 and launch.baseline > 0
    assert launch.target == ">= 0.5x"
    layer = figures["vm.virtqueue_gpu_launch_layer_virtual"]
    # In virtual time, a ResNet-50-sized kernel's launch path is seeded: the
    # guest's rate is below bare metal's (the ring and the host's back end cost
    # time) but of the same order.
    assert 0.5 < layer.ratio < 1.0


def test_serve_memory_bench_reports_the_resident_set_and_its_growth_against_the_target():
    from bench import serve_memory

    figures = {f.name: f for f in serve_memory.run(seconds=3)}
    first = figures["serve_memory.rss_after_first_third"]
    end = figures["serve_memory.rss_at_end"]
    growth = figures["serve_memory.growth_after_first_third"]
    assert first.unit == end.unit == growth.unit == "MB" and first.value > 0 and end.value > 0
    assert growth.value == end.value - first.value and growth.target == "<= 30"
    assert figures["serve_memory.duration"].value >= 3
    issued, served = figures["serve_memory.issued_per_s"], figures["serve_memory.served_per_s"]
    assert issued.value >= served.value > 0


def test_only_a_benchmark_that_runs_for_a_set_time_takes_a_duration(capsys):
    from image import cli

    assert cli.main(["bench", "boot", "--duration", "1"]) == 2
    assert "boot runs for no set time" in capsys.readouterr().err
