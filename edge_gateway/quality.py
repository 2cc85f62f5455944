"""Streaming QARTOD flags per device and quantity, through ``calibration.qc``.

The spike test needs the next reading; the gateway publishes each observation as soon as it
is stored, so it carries the provisional flags (spike = 2 UNKNOWN) and the other three tests.
"""

from __future__ import annotations

from calibration import qc


class StreamingQuality:
    """One :class:`calibration.qc.QcStream` per (device, quantity), thresholds from qc.DEFAULTS."""

    def __init__(self, overrides: dict[str, qc.QcConfig] | None = None) -> None:
        self._configs = {**qc.DEFAULTS, **(overrides or {})}
        self._streams: dict[tuple[str, str], qc.QcStream] = {}

    def check(
        self, device_id: str, quantity: str, t: float, value: float | None
    ) -> tuple[int, dict[str, int]]:
        config = self._configs.get(quantity)
        if config is None:
            return int(qc.Flag.UNKNOWN), {}
        stream = self._streams.get((device_id, quantity))
        if stream is None:
            stream = self._streams[(device_id, quantity)] = qc.QcStream(config)
        result = stream.push(t, value).provisional
        return int(result.flag), {name: int(flag) for name, flag in result.flags.items()}
