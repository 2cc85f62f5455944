# Run under the MicroPython unix port by bench/ota_verify.py:
#   micropython -X heapsize=H verify_bench.py ALG VECTOR_DIR [skip]
# ALG: rsa (firmware/node/otasig.py on the path) or ed25519 (bench/ota/ed25519.py).
# Prints one JSON line: verify result, time (ms) and the heap the verify took.
import gc
import hashlib
import json
import sys
import time

alg, vec = sys.argv[1], sys.argv[2]
skip = len(sys.argv) > 3
if alg == "rsa":
    from node import otasig
else:
    import ed25519
with open(vec + "/msg", "rb") as f:
    msg = f.read()
with open(vec + "/sig", "rb") as f:
    sig = f.read()
with open(vec + "/pub", "rb") as f:
    pub = f.read()
if alg == "rsa":
    pub = int(pub, 16)
gc.collect()
before = gc.mem_alloc()
ok = None
t0 = time.ticks_us()
if not skip:
    if alg == "rsa":
        ok = otasig.verify(pub, sig, hashlib.sha256(msg).digest())
    else:
        ok = ed25519.verify(pub, msg, sig)
dt = time.ticks_diff(time.ticks_us(), t0)
print(json.dumps({"ok": ok, "ms": dt / 1000, "free_before": gc.mem_free(), "alloc_before": before}))
