"""CityEdge calibration: records and registry, PM corrections, AQI, water, parking, QC, fitting.

Pure CPython; the gateway and integrators use the same functions. Start with
``calibration.records`` (what the gateway applies), ``calibration.aqi`` (Thai and US indices)
and ``calibration.qc`` (QARTOD-style flags). See ``docs/calibration.md``.
"""

from calibration.errors import (
    CalibrationError,
    FitError,
    InputError,
    OutOfRangeError,
    RecordError,
)

__all__ = ["CalibrationError", "FitError", "InputError", "OutOfRangeError", "RecordError"]
__version__ = "0.1.0"
