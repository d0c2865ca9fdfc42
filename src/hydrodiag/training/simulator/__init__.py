"""Physics-based simulator of sensor windows for any topology built from the component vocabulary.

Lumped-parameter hydraulics (pumps, valves, actuators, accumulators, filters, coolers, tank), a heat
balance and vibration, driven by a randomised repeating load cycle, with the 9 anomaly types
injectable at graded severity. Every equation and parameter: docs/SIMULATOR.md.
"""

from hydrodiag.training.simulator.core import (
    SimulatedBatch,
    measure_throughput,
    observable_pairs,
    severity_ramp,
    simulate,
    simulate_degradation,
)
from hydrodiag.training.simulator.faults import COMPATIBILITY, DETECTION_FLOOR, compatible_anomalies
from hydrodiag.training.simulator.fleet import Fleet, simulate_fleet

__all__ = [
    "COMPATIBILITY",
    "DETECTION_FLOOR",
    "Fleet",
    "SimulatedBatch",
    "compatible_anomalies",
    "measure_throughput",
    "observable_pairs",
    "severity_ramp",
    "simulate",
    "simulate_degradation",
    "simulate_fleet",
]
