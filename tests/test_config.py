"""KernelConfig: validated at the edge, and the boot plan decides what boot starts."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel import BootPlan, ConfigError, Kernel, KernelConfig, ServerSpec, boot
from kernel.config import (
    DEVICES,
    GPU_PRESETS,
    MAX_CPUS,
    MAX_FRAMES,
    MAX_SLICE_NS,
    MAX_TASK_PAGES,
    MAX_TRAP_COST_NS,
)
from kernel.log import FORMATS
from kernel.programs import ProgramTable
from kernel.traps import Call, Message, Poweroff, Recv, Reply

not_int = st.one_of(
    st.booleans(), st.floats(allow_nan=False), st.text(max_size=3), st.none(), st.just([1])
)
not_bool = st.one_of(st.integers(), st.text(max_size=3), st.none())
not_str = st.one_of(st.integers(), st.booleans(), st.just(b"a100"))  # None: no GPU


def outside(low: int, high: int) -> st.SearchStrategy:
    return st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1), not_int)


BAD_VALUES = {
    "seed": not_int,
    "cpus": outside(1, MAX_CPUS),
    "frames": outside(4, MAX_FRAMES),
    "task_pages": outside(1, MAX_TASK_PAGES),
    "slice_ns": outside(1_000, MAX_SLICE_NS),
    "trap_cost_ns": outside(1, MAX_TRAP_COST_NS),
    "gpu": st.one_of(st.text(max_size=6).filter(lambda s: s not in GPU_PRESETS), not_str),
    "log_format": st.one_of(
        st.text(max_size=6).filter(lambda s: s not in FORMATS), not_str, st.none()
    ),
    "name": st.one_of(not_str, st.none()),
    "headless": not_bool,
    "realtime": not_bool,
    "plan": st.one_of(not_str, st.none(), st.just(("console",))),
}


@given(data=st.data(), field=st.sampled_from(sorted(BAD_VALUES)))
def test_a_bad_config_value_is_refused_with_a_message_naming_the_field(data, field):
    value = data.draw(BAD_VALUES[field], label=field)
    with pytest.raises(ConfigError, match=rf"^{field}\b"):
        KernelConfig(**{field: value})


@given(
    cpus=st.integers(1, MAX_CPUS),
    frames=st.integers(4, MAX_FRAMES),
    seed=st.integers(),
    gpu=st.sampled_from((*GPU_PRESETS, None)),
    headless=st.booleans(),
)
def test_a_good_config_is_kept_as_given(cpus, frames, seed, gpu, headless):
    config = KernelConfig(cpus=cpus, frames=frames, seed=seed, gpu=gpu, headless=headless)
    assert (config.cpus, config.frames, config.seed, config.gpu) == (cpus, frames, seed, gpu)
    assert config.realtime is not headless  # a person at the console: paced to the wall clock
    assert config.plan == BootPlan.standard(gpu)


@given(
    name=st.one_of(st.just(""), st.just("a b"), st.integers()),
    device=st.text(max_size=6).filter(lambda d: d not in DEVICES),
)
def test_a_bad_boot_plan_is_refused(name, device):
    with pytest.raises(ConfigError, match=r"^name\b"):
        ServerSpec(name, "console")
    with pytest.raises(ConfigError, match=r"^devices: server 'x' asks for"):
        ServerSpec("x", "console", devices=(device,))
    console = ServerSpec("console", "console")
    with pytest.raises(ConfigError, match=r"^servers: two servers are named 'console'"):
        BootPlan((console, console))
    with pytest.raises(ConfigError, match=r"^plan: it starts the vgpu server, but gpu is None"):
        KernelConfig(gpu=None, plan=BootPlan.standard("a100"))


def test_the_config_is_frozen():
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        KernelConfig().cpus = 4  # type: ignore[misc]


def test_the_kernel_knows_the_gpu_presets_the_driver_ships():
    from drivers.vgpu.presets import PRESETS

    assert set(GPU_PRESETS) == set(PRESETS)


def test_a_kernel_takes_a_config_or_settings_not_both():
    k = Kernel(KernelConfig(cpus=3))
    assert len(k.cpus) == 3 and k.config.cpus == 3
    k.shutdown()
    with pytest.raises(TypeError, match="not both"):
        Kernel(KernelConfig(), cpus=3)


def test_a_kernel_without_a_gpu_in_its_plan_has_no_vgpu_server():
    with boot(KernelConfig(gpu=None)) as k:
        names = {name for _pid, _ppid, _state, _cpu, _rss, name in k.proclist()}
        assert "vgpu" not in names and "console" in names


def test_boot_starts_the_servers_of_the_plan_with_the_devices_it_names():
    """A guest-like plan: the console and a server of its own instead of the vGPU driver."""
    seen: dict[str, list[str]] = {}

    def balloon_server(proc):
        seen["balloon"] = sorted(proc.caps)
        r = yield Recv(proc.caps["endpoint"])
        yield Reply(r.reply, Message("inflated", r.msg.payload))

    def init(proc):
        seen["init"] = sorted(proc.caps)
        r = yield Call(proc.caps["balloon"], Message("inflate", 16))
        seen["answer"] = [r.msg.label]
        yield Poweroff()

    programs = ProgramTable()
    programs.register("balloon", balloon_server)
    programs.register("guest-init", init)
    plan = BootPlan(
        (
            ServerSpec("console", "console", devices=("tty", "irq")),
            ServerSpec("balloon", "balloon", devices=("mlaas",)),
        ),
        init="guest-init",
    )
    k = Kernel(KernelConfig(gpu=None, plan=plan), programs=programs)
    k.boot()
    assert k.halt_reason.startswith("poweroff")
    k.shutdown()
    assert seen == {
        "balloon": ["endpoint", "mlaas"],
        "init": ["balloon", "console"],
        "answer": ["inflated"],
    }
