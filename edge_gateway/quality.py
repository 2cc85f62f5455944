"""Streaming QARTOD flags per device and quantity, through ``calibration.qc``.

The spike test needs the next reading (QARTOD applies it with a one-step delay). The gateway
publishes each observation as soon as it is stored, with provisional flags (spike = 2 UNKNOWN)
and the other three tests; the device's next observation carries the settled flags of this one
in ``settles`` (docs/contract.md).
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
    ) -> tuple[int, dict[str, int], tuple[int, dict[str, int]] | None]:
        """(flag, tests) of this reading, provisional, and the settled (flag, tests) of the
        previous reading of this stream, or None when there is none to settle."""
        config = self._configs.get(quantity)
        if config is None:
            return int(qc.Flag.UNKNOWN), {}, None
        stream = self._streams.get((device_id, quantity))
        if stream is None:
            stream = self._streams[(device_id, quantity)] = qc.QcStream(config)
        step = stream.push(t, value)
        settled = None
        if step.settled is not None:
            settled = (int(step.settled.flag), _tests(step.settled))
        return int(step.provisional.flag), _tests(step.provisional), settled


def _tests(result: qc.QcResult) -> dict[str, int]:
    return {name: int(flag) for name, flag in result.flags.items()}
