"""OTA signature candidates on the MicroPython unix port (docs/ota.md, "Choosing the algorithm").

    python bench/ota_verify.py

For RSA-2048, RSA-3072 (firmware/node/otasig.py: pow(s, 65537, n) + native SHA-256) and
Ed25519 in pure MicroPython (bench/ota/ed25519.py, with its pure SHA-512), over a 3 KB
manifest: verify time at `-X heapsize=64k` (best of 3 runs) and the verify's peak heap, found
as the smallest heap (1 KB steps) at which the verify succeeds minus the smallest at which the
same script runs with the verify skipped. Signatures are made with `cryptography`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from host_tools.sim.simnode import micropython_path

SCRIPT = REPO / "bench" / "ota" / "verify_bench.py"
PATH = f"{REPO / 'firmware'}:{REPO / 'bench' / 'ota'}"


def make_vectors(root: Path, msg: bytes) -> dict[str, Path]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

    out: dict[str, Path] = {}
    for bits in (2048, 3072):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        d = root / f"rsa{bits}"
        d.mkdir()
        (d / "msg").write_bytes(msg)
        (d / "sig").write_bytes(key.sign(msg, padding.PKCS1v15(), hashes.SHA256()))
        (d / "pub").write_text(f"{key.public_key().public_numbers().n:x}")
        out[f"RSA-{bits}"] = d
    ek = ed25519.Ed25519PrivateKey.generate()
    d = root / "ed25519"
    d.mkdir()
    (d / "msg").write_bytes(msg)
    (d / "sig").write_bytes(ek.sign(msg))
    from cryptography.hazmat.primitives import serialization as ser

    (d / "pub").write_bytes(ek.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw))
    out["Ed25519"] = d
    return out


def run(alg: str, vec: Path, heap_k: int, skip: bool = False) -> dict[str, Any] | None:
    args = [micropython_path(), "-X", f"heapsize={heap_k}k", str(SCRIPT), alg, str(vec)]
    proc = subprocess.run(
        args + (["skip"] if skip else []),
        capture_output=True,
        text=True,
        env={"MICROPYPATH": PATH},
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def min_heap_k(alg: str, vec: Path, skip: bool) -> int:
    lo, hi = 2, 64  # lo fails or is untested, hi works
    if run(alg, vec, hi, skip) is None:
        return -1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = run(alg, vec, mid, skip)
        if r is not None and (skip or r["ok"]):
            hi = mid
        else:
            lo = mid
    return hi


def measure(name: str, vec: Path) -> dict[str, Any]:
    alg = "ed25519" if name == "Ed25519" else "rsa"
    runs = [run(alg, vec, 64) for _ in range(3)]
    ok = all(r is not None and r["ok"] for r in runs)
    ms = min(r["ms"] for r in runs if r is not None) if ok else float("nan")
    peak = min_heap_k(alg, vec, False) - min_heap_k(alg, vec, True)
    return {
        "alg": name,
        "verified": ok,
        "verify_ms": round(ms, 1),
        "peak_heap_kb": peak,
        "sig_bytes": len((vec / "sig").read_bytes()),
    }


def ota_verify_figures() -> list[dict[str, Any]]:
    """One dict per candidate (also called by bench/firmware.py)."""
    msg = b"".join(b"%d %s /node/module%02d.mpy\n" % (4000 + i, b"ab" * 32, i) for i in range(36))
    with tempfile.TemporaryDirectory() as tmp:
        vectors = make_vectors(Path(tmp), msg[:3072])
        return [measure(name, vec) for name, vec in vectors.items()]


def main() -> int:
    for fig in ota_verify_figures():
        print(" ".join(f"{k}={v}" for k, v in fig.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
