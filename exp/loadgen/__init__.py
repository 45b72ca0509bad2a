"""`malv serve --loadgen SCENARIO`: MLPerf LoadGen drives a booted realtime-mode kernel.

LoadGen issues queries in wall time; an inference server program inside the
kernel (userland/inference.py) runs each query's model on the vGPU under the
sharing policy the loaded GPU advisor selects, beside optional best-effort
programs; LoadGen measures, and says VALID or INVALID.

    settings = ServeSettings("Server", policy="lithos", colocate=("gpu-burn",))
    data = serve(settings, "results/serve")          # or compare(settings, ("mps", "lithos"), out)

The parts: settings.py (what a run is), sut.py (LoadGen), ledger.py (one
response per query), port.py (the queries device), session.py (the booted
kernel on its thread), results.py (what is written), run.py (the API),
cli.py (the command).
"""

from exp.loadgen.run import compare, find_peak, serve
from exp.loadgen.session import ServeError
from exp.loadgen.settings import SCENARIOS, ServeSettings, SettingsError
from exp.loadgen.sut import LoadgenMissing

__all__ = [
    "SCENARIOS",
    "LoadgenMissing",
    "ServeError",
    "ServeSettings",
    "SettingsError",
    "compare",
    "find_peak",
    "serve",
]
