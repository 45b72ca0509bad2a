"""Faults in the system under test: LoadGen still gets a response for every
query, the failures are counted by reason, and nothing hangs."""

from __future__ import annotations

import pytest
from conftest import MODEL, short_run

from exp.loadgen import serve
from kernel.programs import DEFAULT_PROGRAMS
from kernel.traps import GetTime, MapDevice, Sleep, Wait

SERVED_BEFORE_CRASH = 5


def next_query(proc, port):
    while (query := port.take()) is None:
        yield Wait(proc.caps["irq"])
    return query


def crashing_server(proc):
    """Serves a few queries, takes one more, and crashes holding it."""
    port = yield MapDevice(proc.caps["queries"])
    port.ready((MODEL,))
    for _ in range(SERVED_BEFORE_CRASH):
        query = yield from next_query(proc, port)
        yield Sleep(1000)
        port.complete(query, (yield GetTime()))
    yield from next_query(proc, port)
    raise RuntimeError("the server crashed")


def stuck_server(proc):
    """Takes every query and never answers."""
    port = yield MapDevice(proc.caps["queries"])
    port.ready((MODEL,))
    while True:
        yield from next_query(proc, port)


DEFAULT_PROGRAMS.register("crashing-server", crashing_server)
DEFAULT_PROGRAMS.register("stuck-server", stuck_server)


def answered_all(data) -> dict:
    queries = data["queries"]
    assert queries["answered"] == queries["issued"] > 0
    assert queries["served"] + queries["failed"] == queries["issued"]
    return queries


@pytest.mark.slow  # a LoadGen run in wall time
def test_queries_for_a_model_not_loaded_fail_and_the_rest_are_served(tmp_path):
    settings = short_run(sample_models=(MODEL, "nosuch_model"), min_queries=20, min_duration_s=1.0)
    data = serve(settings, tmp_path / "o")
    queries = answered_all(data)
    assert set(queries["failures"]) == {"model 'nosuch_model' is not loaded"}
    assert queries["served"] > 0 and queries["failed"] > 0
    assert {q["model"] for q in queries["failed_queries"]} == {"nosuch_model"}
    assert len(queries["failed_queries"]) == queries["failed"]
    assert "model 'nosuch_model' is not loaded" in (tmp_path / "o" / "results.md").read_text()


def test_a_server_that_dies_mid_run_fails_what_it_held_and_every_later_query(tmp_path):
    out = tmp_path / "o"
    data = serve(short_run(server="crashing-server", min_queries=20, colocate=("gpu-burn",)), out)
    queries = answered_all(data)
    assert queries["served"] == SERVED_BEFORE_CRASH
    assert queries["failures"] == {"server exited (status -1)": queries["issued"] - 5}
    assert data["server"] == "server exited (status -1)"
    assert "burn_gemm" in (out / "trace.json").read_text()  # the co-located load ran on


def test_a_server_that_never_answers_has_its_queries_timed_out(tmp_path):
    data = serve(
        short_run(server="stuck-server", min_queries=10, min_duration_s=0.5, query_timeout_s=0.5),
        tmp_path / "o",
    )
    queries = answered_all(data)
    assert queries["served"] == 0
    assert queries["failures"] == {"timed out": queries["issued"]}
    assert data["result"] == f"INVALID ({queries['issued']} failed)"
