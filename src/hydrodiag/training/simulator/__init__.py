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

__all__ = [
    "COMPATIBILITY",
    "DETECTION_FLOOR",
    "SimulatedBatch",
    "compatible_anomalies",
    "measure_throughput",
    "observable_pairs",
    "severity_ramp",
    "simulate",
    "simulate_degradation",
]
