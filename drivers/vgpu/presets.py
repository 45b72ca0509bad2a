"""GPU presets: the parameters that define a virtual GPU (`drivers/vgpu`).

A `GpuSpec` is everything the engine, the reference model and the power model
need to know about a device: its TPCs, memory, bandwidth, clock table and the
power-model constants.  The presets `a100`, `h100` and `v100` follow NVIDIA's
published figures where there are any (TPC count, memory, bandwidth, clock
range, TDP); `v100` is the device Orion's kernel profiles were measured on
(`drivers/vgpu/traces.py` carries durations across devices);
the power-model constants are this model's own choices and are documented
field by field below, so experiments can state them.

Power model (see `GpuSpec.power_w`)::

    P = idle_power_w
      + busy_tpcs * dyn_w_per_tpc_ghz_v2 * f_GHz * V(f)**2
      + mem_w_per_gbps * bandwidth_in_use_GBps

    V(f) = v_min                                    f <= ridge_clock_mhz
         = v_min + volt_per_mhz * (f - ridge_clock_mhz)   above the ridge

Below the ridge the voltage cannot drop further, so dynamic power falls only
linearly with f; above it, it rises roughly with f**3.  This is the shape that
makes DVFS pay off (LithOS §6).
"""

from __future__ import annotations

import attrs

from drivers.vgpu.errors import InvalidArgument


def _positive(instance, attribute, value) -> None:
    if not value > 0:
        raise InvalidArgument(f"GpuSpec.{attribute.name} must be positive, got {value!r}")


def _non_negative(instance, attribute, value) -> None:
    if not value >= 0:
        raise InvalidArgument(f"GpuSpec.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class GpuSpec:
    """A virtual GPU model.  All fields are validated on construction."""

    name: str
    #: Texture processing clusters: the unit of TPC masks, occupancy and power.
    n_tpcs: int = attrs.field(validator=_positive)
    #: Streaming multiprocessors per TPC (2 on Ampere and Hopper).
    sms_per_tpc: int = attrs.field(validator=_positive)
    #: Device memory in bytes.
    memory_bytes: int = attrs.field(validator=_positive)
    #: Peak DRAM bandwidth in GB/s (10**9 bytes per second).
    bandwidth_gbps: float = attrs.field(validator=_positive)
    #: Lowest, highest and step of the supported clock table, in MHz.
    min_clock_mhz: int = attrs.field(validator=_positive)
    max_clock_mhz: int = attrs.field(validator=_positive)
    clock_step_mhz: int = attrs.field(validator=_positive)
    #: Board power limit in watts.  `peak_power_w` must not exceed it.
    tdp_w: float = attrs.field(validator=_positive)
    #: Power drawn with no block resident and no memory traffic, in watts.
    idle_power_w: float = attrs.field(validator=_non_negative)
    #: Dynamic power of one busy TPC per GHz per volt squared (W / (GHz*V^2)).
    dyn_w_per_tpc_ghz_v2: float = attrs.field(validator=_non_negative)
    #: Core voltage at and below the ridge frequency, in volts.
    v_min: float = attrs.field(validator=_positive)
    #: Frequency above which voltage must rise with the clock, in MHz.
    ridge_clock_mhz: int = attrs.field(validator=_positive)
    #: Voltage slope above the ridge, in volts per MHz.
    volt_per_mhz: float = attrs.field(validator=_non_negative)
    #: DRAM and interconnect power per GB/s of bandwidth in use, in W/(GB/s).
    mem_w_per_gbps: float = attrs.field(validator=_non_negative)
    #: Time from a clock request to the new clock taking effect, in ns.
    switch_latency_ns: int = attrs.field(validator=_positive)
    #: Peak FP32 throughput at max clock, in TFLOP/s (functional kernels' timing).
    peak_fp32_tflops: float = attrs.field(validator=_positive)
    #: Share of the device's block slots with which a purely memory-bound
    #: kernel saturates DRAM bandwidth (see `work.BlockCost`).
    dram_saturation_share: float = attrs.field(default=0.25, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.min_clock_mhz > self.max_clock_mhz:
            raise InvalidArgument(
                f"GpuSpec {self.name!r}: min_clock_mhz {self.min_clock_mhz} is above "
                f"max_clock_mhz {self.max_clock_mhz}"
            )
        if (self.max_clock_mhz - self.min_clock_mhz) % self.clock_step_mhz:
            raise InvalidArgument(
                f"GpuSpec {self.name!r}: the clock range {self.min_clock_mhz}-"
                f"{self.max_clock_mhz} MHz is not a whole number of "
                f"{self.clock_step_mhz} MHz steps"
            )
        if not self.min_clock_mhz <= self.ridge_clock_mhz <= self.max_clock_mhz:
            raise InvalidArgument(
                f"GpuSpec {self.name!r}: ridge_clock_mhz {self.ridge_clock_mhz} lies outside "
                f"the clock range {self.min_clock_mhz}-{self.max_clock_mhz} MHz"
            )
        if self.dram_saturation_share > 1:
            raise InvalidArgument(f"GpuSpec {self.name!r}: dram_saturation_share above 1")
        if self.n_tpcs > 256:
            raise InvalidArgument(f"GpuSpec {self.name!r}: at most 256 TPCs are supported")
        if self.bandwidth_mbps < 1:
            raise InvalidArgument(f"GpuSpec {self.name!r}: bandwidth below 1 MB/s")
        if self.peak_power_w > self.tdp_w:
            raise InvalidArgument(
                f"GpuSpec {self.name!r}: peak power {self.peak_power_w:.1f} W (idle + every "
                f"TPC busy at max clock + full bandwidth) exceeds the TDP {self.tdp_w} W"
            )

    # -- derived figures -------------------------------------------------

    @property
    def n_sms(self) -> int:
        return self.n_tpcs * self.sms_per_tpc

    @property
    def bandwidth_mbps(self) -> int:
        """Bandwidth as an integer of MB/s: the engine's exact demand unit."""
        return round(self.bandwidth_gbps * 1000)

    @property
    def all_tpcs_mask(self) -> int:
        return (1 << self.n_tpcs) - 1

    @property
    def clocks_mhz(self) -> range:
        """Every supported clock, lowest first."""
        return range(self.min_clock_mhz, self.max_clock_mhz + 1, self.clock_step_mhz)

    @property
    def peak_power_w(self) -> float:
        return (
            self.idle_power_w
            + self.n_tpcs * self.dynamic_power_per_tpc_w(self.max_clock_mhz)
            + self.mem_w_per_gbps * self.bandwidth_gbps
        )

    def check_clock(self, clock_mhz: int) -> int:
        """Return `clock_mhz` if it is in the clock table, else raise InvalidArgument."""
        if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, int):
            raise InvalidArgument(f"clock must be an integer of MHz, got {clock_mhz!r}")
        if not self.min_clock_mhz <= clock_mhz <= self.max_clock_mhz:
            raise InvalidArgument(
                f"{self.name}: clock {clock_mhz} MHz is outside "
                f"{self.min_clock_mhz}-{self.max_clock_mhz} MHz"
            )
        if (clock_mhz - self.min_clock_mhz) % self.clock_step_mhz:
            raise InvalidArgument(
                f"{self.name}: clock {clock_mhz} MHz is not on the "
                f"{self.clock_step_mhz} MHz grid starting at {self.min_clock_mhz} MHz"
            )
        return clock_mhz

    def voltage_v(self, clock_mhz: int) -> float:
        """Core voltage V(f): flat below the ridge, linear above it."""
        return self.v_min + self.volt_per_mhz * max(0, clock_mhz - self.ridge_clock_mhz)

    def dynamic_power_per_tpc_w(self, clock_mhz: int) -> float:
        """Dynamic power of one busy TPC at this clock: k * f * V(f)**2."""
        v = self.voltage_v(clock_mhz)
        return self.dyn_w_per_tpc_ghz_v2 * (clock_mhz / 1000.0) * v * v

    def mem_w_per_mbps(self) -> float:
        return self.mem_w_per_gbps / 1000.0

    def power_w(self, busy_tpcs: int, clock_mhz: int, demand_mbps: int) -> float:
        """Device power; memory power counts only the bandwidth actually delivered.

        The engine and the reference model evaluate this same expression, in
        this order, so that their energies agree to the last bits.
        """
        in_use = min(demand_mbps, self.bandwidth_mbps)
        return (
            self.idle_power_w
            + busy_tpcs * self.dynamic_power_per_tpc_w(clock_mhz)
            + self.mem_w_per_mbps() * in_use
        )


# A100 (SXM4 40 GB): 7 GPCs, 54 TPCs enabled of 64, 108 SMs; 1555 GB/s HBM2;
# 210-1410 MHz in 15 MHz steps; 400 W TDP; 19.5 TFLOP/s FP32.
# Power constants (this model's choices): 55 W idle; 3.2 W/(GHz*V^2) per TPC;
# V = 0.70 V up to 900 MHz then +0.7 mV/MHz (1.057 V at 1410 MHz);
# 0.04 W per GB/s (62 W at full bandwidth).  Peak: 389 W.
a100 = GpuSpec(
    name="a100",
    n_tpcs=54,
    sms_per_tpc=2,
    memory_bytes=40 * 10**9,
    bandwidth_gbps=1555.0,
    min_clock_mhz=210,
    max_clock_mhz=1410,
    clock_step_mhz=15,
    tdp_w=400.0,
    idle_power_w=55.0,
    dyn_w_per_tpc_ghz_v2=3.2,
    v_min=0.70,
    ridge_clock_mhz=900,
    volt_per_mhz=0.0007,
    mem_w_per_gbps=0.04,
    switch_latency_ns=20_000_000,
    peak_fp32_tflops=19.5,
)

# H100 (SXM5 80 GB): 66 TPCs, 132 SMs; 3.35 TB/s HBM3; up to 1980 MHz, and
# 210 MHz as the lowest clock (the same floor as the A100 table) in 15 MHz
# steps; 700 W TDP; 67 TFLOP/s FP32.
# Power constants (this model's choices): 70 W idle; 3.3 W/(GHz*V^2) per TPC;
# V = 0.70 V up to 1000 MHz then +0.4 mV/MHz (1.092 V at 1980 MHz);
# 0.03 W per GB/s (100 W at full bandwidth).  Peak: 685 W.
h100 = GpuSpec(
    name="h100",
    n_tpcs=66,
    sms_per_tpc=2,
    memory_bytes=80 * 10**9,
    bandwidth_gbps=3350.0,
    min_clock_mhz=210,
    max_clock_mhz=1980,
    clock_step_mhz=15,
    tdp_w=700.0,
    idle_power_w=70.0,
    dyn_w_per_tpc_ghz_v2=3.3,
    v_min=0.70,
    ridge_clock_mhz=1000,
    volt_per_mhz=0.0004,
    mem_w_per_gbps=0.03,
    switch_latency_ns=20_000_000,
    peak_fp32_tflops=67.0,
)

# V100 (SXM2 16 GB, the Volta part Orion's profiles were measured on): 6 GPCs,
# 40 TPCs of 2 SMs, 80 SMs; 900 GB/s HBM2; up to 1530 MHz boost; 300 W TDP;
# 15.7 TFLOP/s FP32 (NVIDIA Tesla V100 datasheet, 2018; Volta architecture
# whitepaper, 2017, table 1).  A 32 GB board differs only in memory:
# `attrs.evolve(v100, memory_bytes=32 * 10**9)`.  Clocks: nvidia-smi lists
# 135-1530 MHz for the V100's graphics clock in steps of about 7.5 MHz; this
# table keeps every second one (15 MHz, as the other presets).
# Power constants (this model's choices, as for the A100; no per-clock power
# or voltage measurement of the V100 is published): 40 W idle (nvidia-smi
# reports about 40 W for an idle SXM2 V100 at P0); 3.0 W/(GHz*V^2) per TPC;
# V = 0.70 V up to 900 MHz then +0.55 mV/MHz (1.047 V at 1530 MHz), the same
# flat-then-linear shape as the A100's curve; 0.05 W per GB/s (45 W at full
# bandwidth).  Peak: 286 W, under the 300 W TDP.
v100 = GpuSpec(
    name="v100",
    n_tpcs=40,
    sms_per_tpc=2,
    memory_bytes=16 * 10**9,
    bandwidth_gbps=900.0,
    min_clock_mhz=135,
    max_clock_mhz=1530,
    clock_step_mhz=15,
    tdp_w=300.0,
    idle_power_w=40.0,
    dyn_w_per_tpc_ghz_v2=3.0,
    v_min=0.70,
    ridge_clock_mhz=900,
    volt_per_mhz=0.00055,
    mem_w_per_gbps=0.05,
    switch_latency_ns=20_000_000,
    peak_fp32_tflops=15.7,
)

PRESETS: dict[str, GpuSpec] = {spec.name: spec for spec in (a100, h100, v100)}


def scaled(spec: GpuSpec, n_tpcs: int, switch_latency_ns: int | None = None) -> GpuSpec:
    """`spec` cut down to `n_tpcs` TPCs, with bandwidth in proportion.

    For small devices in tests and for the slices of a partitioned GPU.
    Memory and the per-TPC power constants are kept; memory power scales
    with the bandwidth.
    """
    return attrs.evolve(
        spec,
        name=f"{spec.name}/{n_tpcs}",
        n_tpcs=n_tpcs,
        bandwidth_gbps=spec.bandwidth_gbps * n_tpcs / spec.n_tpcs,
        switch_latency_ns=spec.switch_latency_ns
        if switch_latency_ns is None
        else switch_latency_ns,
    )


def get_preset(name: str) -> GpuSpec:
    """The preset called `name` (case-insensitive); InvalidArgument if there is none."""
    spec = PRESETS.get(str(name).strip().lower())
    if spec is None:
        known = ", ".join(sorted(PRESETS))
        raise InvalidArgument(f"unknown GPU preset {name!r}; known presets: {known}")
    return spec
