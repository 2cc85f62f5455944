"""Over-the-air install on the real MicroPython (docs/ota.md): signed bundles, refusals, key
rotation, A/B switch, probation and rollback, and a power cut at every flash write.

The node's flash is a littlefs image (tests/firmware/ota_node.py) on a block device that
counts block writes and erases; a cut kills the process (SIGKILL) before the k-th one.
Bundles are made with the host tools (host_tools/field/release.py) and signed with `cryptography`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from host_tools.field import release
from host_tools.sim.brokers import MosquittoBroker
from host_tools.sim.simnode import SimNode, compile_tree
from tests.support.tools import micropython, mpy_cross

pytestmark = pytest.mark.micropython

HARNESS = Path(__file__).with_name("ota_node.py")
HEAP = "64k"
BLOCKS = 64  # 256 KB of flash


def _abi_and_version() -> tuple[str, str]:
    code = (
        "import sys; m=sys.implementation._mpy; v=sys.implementation.version;"
        "print('%d.%d %d.%d.%d' % (m & 255, (m >> 8) & 3, v[0], v[1], v[2]))"
    )
    out = subprocess.run(
        [micropython(), "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], out[1]


HARNESS_DIR: list[Path] = []


@pytest.fixture(scope="module")
def tree(harness_dir: Path) -> Path:
    t = compile_tree(mpy_cross()) / "firmware"
    HARNESS_DIR[1:] = [t]
    return t


@pytest.fixture(scope="module")
def harness_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ota_node.py compiled once (it runs hundreds of times)."""
    d = tmp_path_factory.mktemp("harness")
    subprocess.run([mpy_cross(), "-O3", "-o", str(d / "ota_node.mpy"), str(HARNESS)], check=True)
    HARNESS_DIR[:] = [d]
    return d


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("keys")
    out: dict[str, Any] = {}
    for name in ("k1", "k2", "k3"):
        priv, pub, kid = release.keygen(d, name, None)
        out[name] = priv
        out[name + "_pub"] = release.load_public(pub)
        out[name + "_id"] = kid
    first = d / "list1"
    release.key_list(first, [out["k1_pub"], out["k2_pub"]], [], 1, out["k1"])
    out["list1"] = first / "keys.txt"
    return out


def files_for(
    version: int, n: int = 4, size: int = 1500, installer: bool = True
) -> dict[str, bytes]:
    """probe.py (says the version), the installer itself (each version carries its own: the
    running slot's node.ota installs the next) and `n` filler modules."""
    node = HARNESS_DIR[1] / "node"
    files = {"probe.py": f"V = {version}\n".encode()}
    if installer:
        files["node/ota.mpy"] = (node / "ota.mpy").read_bytes()
        files["node/otasig.mpy"] = (node / "otasig.mpy").read_bytes()
    for i in range(n):
        seed = hashlib.sha256(b"%d-%d" % (version, i)).digest()
        files[f"node/m{i}.mpy" if i % 2 else f"drivers/d{i}.mpy"] = (seed * (size // 32 + 1))[:size]
    return files


def make_bundle(
    root: Path, version: int, key: Path, files: dict[str, bytes] | None = None, **header: Any
) -> Path:
    abi, mp = _abi_and_version()
    files = files if files is not None else files_for(version)
    head = {
        "v": 1,
        "version": version,
        "label": f"test-{version}",
        "abi": abi,
        "min_mp": mp,
        "kinds": ["air", "water"],
        "boards": ["sim"],
        "files": len(files),
        "total": sum(len(d) for d in files.values()),
        "created": "2026-12-03T00:00:00Z",
        "downgrade": False,
    }
    head.update(header)
    _, kid = release.sign_bytes(key, b"")
    head.setdefault("key", kid)
    if not head["key"]:
        head["key"] = kid
    out = root / f"bundle-{version}-{len(list(root.glob('bundle-*')))}"
    for path, data in files.items():
        (out / "files" / path).parent.mkdir(parents=True, exist_ok=True)
        (out / "files" / path).write_bytes(data)
    manifest = release.manifest_bytes(head, files)
    (out / "manifest.txt").write_bytes(manifest)
    (out / "manifest.sig").write_bytes(release.sign_bytes(key, manifest)[0])
    return out


class Node:
    def __init__(self, tree: Path, image: Path, harness: Path) -> None:
        self.tree, self.image, self.harness = tree, image, harness

    def run(self, *ops: str | Path | int, cut: int = 0, heap: str = HEAP) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [
                micropython(),
                "-X",
                f"heapsize={heap}",
                "-m",
                "ota_node",
                str(self.image),
                str(cut),
                *map(str, ops),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"MICROPYPATH": f".frozen:{self.tree}:{self.harness}"},
        )
        lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        if cut:
            assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)
        else:
            assert proc.returncode == 0, (proc.stdout, proc.stderr)
        return lines

    def boot(self) -> dict[str, Any]:
        return self.run("boot")[0]


def fresh(tree: Path, tmp: Path, keys: dict[str, Any], name: str = "flash.img") -> Node:
    node = Node(tree, tmp / name, HARNESS_DIR[0])
    node.run("mkfs", BLOCKS, "factory", keys["list1"])
    return node


def test_install_switches_slot_and_probation_ends_healthy(
    tree: Path, tmp_path: Path, keys: dict[str, Any]
) -> None:
    node = fresh(tree, tmp_path, keys)
    assert node.boot()["probe"] == 0
    b1 = make_bundle(tmp_path, 1, keys["k1"])
    assert node.run("install", b1)[0] == {"op": "install", "ver": 1}
    first = node.boot()
    assert first["probe"] == 1 and first["intact"]
    assert first["state"]["slot"] == "a" and first["state"]["boots"] == 1
    assert node.run("healthy")[0]["state"]["last"]["state"] == "healthy"
    again = node.boot()
    assert again["probe"] == 1 and "probation" not in again["state"]
    b2 = make_bundle(tmp_path, 2, keys["k2"])  # the second key: accepted
    assert node.run("install", b2)[0]["ver"] == 2
    st = node.boot()
    assert st["probe"] == 2 and st["state"]["slot"] == "b" and st["state"]["prev"] == "a"


def test_rollback_after_three_failed_boots_with_reason(
    tree: Path, tmp_path: Path, keys: dict[str, Any]
) -> None:
    node = fresh(tree, tmp_path, keys)
    node.run("install", make_bundle(tmp_path, 1, keys["k1"]))
    node.boot()
    node.run("healthy")
    node.run("install", make_bundle(tmp_path, 2, keys["k1"]))
    for n in (1, 2, 3):  # three boots of version 2, none healthy (it crashed, the WDT fired...)
        st = node.boot()
        assert st["probe"] == 2 and st["state"]["boots"] == n
    back = node.boot()
    assert back["probe"] == 1 and back["intact"]
    last = back["state"]["last"]
    assert last["state"] == "rolled_back" and last["ver"] == 2 and last["to"] == 1
    assert "healthy" in last["reason"]
    assert back["state"]["bad"] == [2]
    refused = node.run("install", make_bundle(tmp_path, 2, keys["k1"]))[0]
    assert "rolled back" in refused["refused"]
    assert node.run("install", make_bundle(tmp_path, 3, keys["k1"]))[0]["ver"] == 3


def _tamper(b: Path, how: str) -> None:
    f = b / "files" / "node" / "m1.mpy"  # 1500 bytes
    data = bytearray(f.read_bytes())
    if how == "tampered":
        f.write_bytes(bytes(data[:100]) + b"import evil\n" + bytes(data[112:]))
    elif how == "truncated":
        f.write_bytes(bytes(data[:-200]))
    elif how == "flipped":
        data[700] ^= 0x10
        f.write_bytes(bytes(data))
    elif how == "flipped_manifest":
        m = bytearray((b / "manifest.txt").read_bytes())
        m[-5] ^= 0x01
        (b / "manifest.txt").write_bytes(bytes(m))


@pytest.fixture(scope="module")
def on_v2(tree: Path, keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flash image running version 2 (healthy), copied by each refusal case."""
    d = tmp_path_factory.mktemp("on_v2")
    node = fresh(tree, d, keys)
    node.run("install", make_bundle(d, 2, keys["k1"]))
    node.boot()
    node.run("healthy")
    return node.image


@pytest.mark.parametrize(
    "case, reason",
    [
        ("tampered", "SHA-256 does not match"),
        ("truncated", "size 1300, manifest says 1500"),
        ("flipped", "SHA-256 does not match"),
        ("flipped_manifest", "bad signature"),
        ("unknown_key", "unknown or revoked key"),
        ("other_manifest", "bad signature"),
        ("older", "not newer than the installed 2"),
        ("abi", "mpy ABI 6.1"),
        ("board", "not for board 'sim'"),
        ("kind", "not for kind 'air'"),
        ("min_mp", "needs MicroPython 9.0.0"),
        ("same", "version 2 is not newer than the installed 2"),
        ("full", "bytes of flash"),
    ],
)
def test_refused_bundles_keep_the_old_version(
    tree: Path, tmp_path: Path, keys: dict[str, Any], on_v2: Path, case: str, reason: str
) -> None:
    node = Node(tree, tmp_path / "flash.img", HARNESS_DIR[0])
    shutil.copy(on_v2, node.image)
    ops: list[str | Path | int] = []
    if case in ("tampered", "truncated", "flipped", "flipped_manifest"):
        b = make_bundle(tmp_path, 3, keys["k1"])
        _tamper(b, case)
    elif case == "unknown_key":
        b = make_bundle(tmp_path, 3, keys["k3"])
    elif case == "other_manifest":
        b = make_bundle(tmp_path, 3, keys["k1"])
        other = make_bundle(tmp_path, 4, keys["k1"])
        shutil.copy(other / "manifest.sig", b / "manifest.sig")
    elif case == "older":
        b = make_bundle(tmp_path, 1, keys["k1"])
    elif case == "abi":
        b = make_bundle(tmp_path, 3, keys["k1"], abi="6.1")
    elif case == "board":
        b = make_bundle(tmp_path, 3, keys["k1"], boards=["lolin-d32"])
    elif case == "kind":
        b = make_bundle(tmp_path, 3, keys["k1"], kinds=["water", "parking"])
    elif case == "min_mp":
        b = make_bundle(tmp_path, 3, keys["k1"], min_mp="9.0.0")
    elif case == "same":
        b = make_bundle(tmp_path, 2, keys["k1"], downgrade=True)  # a downgrade, not a reinstall
    else:  # full: the flash has room for the manifest but not for the files
        b = make_bundle(tmp_path, 3, keys["k1"], files=files_for(3, n=6, size=20000))
        ops = ["fill", str(120 * 1024)]
    out = node.run(*ops, "install", b)[-2]
    assert reason in out.get("refused", ""), out
    st = node.boot()
    assert st["probe"] == 2 and st["intact"] and st["state"]["ver"] == 2
    assert "probation" not in st["state"]


def test_a_signed_downgrade_installs(tree: Path, tmp_path: Path, keys: dict[str, Any]) -> None:
    node = fresh(tree, tmp_path, keys)
    node.run("install", make_bundle(tmp_path, 5, keys["k1"]))
    node.boot()
    node.run("healthy")
    assert "not newer" in node.run("install", make_bundle(tmp_path, 4, keys["k1"]))[0]["refused"]
    assert node.run("install", make_bundle(tmp_path, 4, keys["k1"], downgrade=True))[0]["ver"] == 4
    st = node.boot()
    assert st["probe"] == 4 and st["intact"] and st["state"]["pver"] == 5


def test_key_rotation_and_revocation(tree: Path, tmp_path: Path, keys: dict[str, Any]) -> None:
    node = fresh(tree, tmp_path, keys)
    assert node.run("install", make_bundle(tmp_path, 1, keys["k2"]))[0]["ver"] == 1
    node.boot()
    node.run("healthy")
    # k2 revokes k1 and brings in k3 (seq 2); a list signed by a revoked or unknown key fails.
    forged = tmp_path / "forged"
    release.key_list(forged, [keys["k3_pub"], keys["k1_pub"]], [], 2, keys["k3"])
    assert "unknown or revoked" in node.run("keys", forged)[0]["refused"]
    rotated = tmp_path / "list2"
    release.key_list(rotated, [keys["k2_pub"], keys["k3_pub"]], [keys["k1_id"]], 2, keys["k2"])
    assert node.run("keys", rotated)[0] == {"op": "keys", "seq": 2}
    assert "not above" in node.run("keys", rotated)[0]["refused"]  # a replayed list
    out = node.run("install", make_bundle(tmp_path, 2, keys["k1"]))[0]
    assert "unknown or revoked key" in out["refused"]
    assert node.run("install", make_bundle(tmp_path, 2, keys["k3"]))[0]["ver"] == 2


def _writes(node: Node, *ops: str | Path | int) -> int:
    return int(node.run(*ops)[-1]["writes"])


def _cut_and_recover(
    tree: Path, base: Path, work: Path, bundle: Path, k: int, old: int, new: int
) -> tuple[int, int]:
    node = Node(tree, work, HARNESS_DIR[0])
    shutil.copy(base, work)
    node.run("install", bundle, cut=k)
    # Restart, then a later attempt, then what the next boot would run (checked in place).
    st, again, done = node.run("boot", "install", bundle, "verify")[:3]
    assert st["intact"], (k, st)
    assert st["probe"] in (old, new) and st["probe"] == st["state"]["ver"], (k, st)
    if st["probe"] == old:  # it resumes or starts over, and completes
        assert again.get("ver") == new, (k, again)
    assert done["ver"] == new and done["intact"] and done["probe_text"] == f"V = {new}\n", (k, done)
    return k, st["probe"]


def _cut_every_write(
    tree: Path, tmp_path: Path, base: Path, bundle: Path, old: int, new: int
) -> tuple[int, dict[int, int]]:
    probe = tmp_path / "probe.img"
    shutil.copy(base, probe)
    total = _writes(Node(tree, probe, HARNESS_DIR[0]), "install", bundle)
    assert total > 20
    with ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(
                lambda k: _cut_and_recover(
                    tree, base, tmp_path / f"cut{k}.img", bundle, k, old, new
                ),
                range(1, total + 1),
            )
        )
    for k in range(1, total + 1):
        (tmp_path / f"cut{k}.img").unlink()
    return total, {k: on for k, on in runs}


def test_power_cut_at_every_write_of_an_install(
    tree: Path, tmp_path: Path, keys: dict[str, Any]
) -> None:
    """Factory (0) → 1, then 1 → 2 (the inactive slot holds an old build to clear first)."""
    node = fresh(tree, tmp_path, keys, "base.img")
    b1 = make_bundle(tmp_path, 1, keys["k1"], files=files_for(1, 3, 800, installer=False))
    total1, ends1 = _cut_every_write(tree, tmp_path, tmp_path / "base.img", b1, 0, 1)
    node.run("install", b1)
    node.boot()
    node.run("healthy")
    node.run("install", make_bundle(tmp_path, 9, keys["k1"], files=files_for(9, n=3)))
    node.boot()
    node.run("healthy")  # now on 9 in slot b, with 1 left in slot a
    b10 = make_bundle(tmp_path, 10, keys["k1"], files=files_for(10, 3, 800, installer=False))
    total2, ends2 = _cut_every_write(tree, tmp_path, tmp_path / "base.img", b10, 9, 10)
    print(f"power cuts: install 0->1 at each of its {total1} writes, 9->10 at each of {total2}")
    # The switch (one rename) is an install's last write, so every cut before it restarted on
    # the old version, intact; the next attempt then completed (checked in _cut_and_recover).
    assert set(ends1.values()) == {0} and set(ends2.values()) == {9}
    assert total1 + total2 >= 200


def test_power_cut_during_probation_and_rollback(
    tree: Path, tmp_path: Path, keys: dict[str, Any]
) -> None:
    node = fresh(tree, tmp_path, keys, "base.img")
    node.run("install", make_bundle(tmp_path, 1, keys["k1"]))
    node.boot()
    node.run("healthy")
    node.run("install", make_bundle(tmp_path, 2, keys["k1"]))
    for _ in range(3):
        node.boot()
    shutil.copy(tmp_path / "base.img", tmp_path / "probe.img")
    total = _writes(Node(tree, tmp_path / "probe.img", HARNESS_DIR[0]), "boot")  # rolls back
    assert total >= 1
    for k in range(1, total + 1):
        work = Node(tree, tmp_path / "w.img", HARNESS_DIR[0])
        shutil.copy(tmp_path / "base.img", work.image)
        work.run("boot", cut=k)
        st = work.boot()
        assert st["probe"] == 1 and st["intact"] and st["state"]["last"]["state"] == "rolled_back"


def test_real_firmware_bundle_installs_in_64k(
    tree: Path, tmp_path: Path, keys: dict[str, Any]
) -> None:
    """`cityedge release build` + `sign` of firmware/, installed at -X heapsize=64k."""
    b = tmp_path / "rel"
    header = release.build_bundle(b, 5, kinds=("air",), boards=("sim",))
    kid = release.sign_bundle(b, keys["k2"])
    assert kid == keys["k2_id"]
    head, entries = release.read_manifest(b)
    assert head["key"] == kid and head["files"] == len(entries) == header["files"]
    assert not any(p in ("main.py", "otaboot.mpy", "otaslot.mpy") for _, _, p in entries)
    node = Node(tree, tmp_path / "flash.img", HARNESS_DIR[0])
    node.run("mkfs", 256, "factory", keys["list1"])
    out = node.run("install", b, "peak")
    assert out[0] == {"op": "install", "ver": 5}
    print(
        f"real bundle: {head['files']} files, {head['total']} bytes; heap {out[1]['heap']}, "
        f"lowest free at a chunk (after gc.collect) {out[1]['min_free']}"
    )
    assert out[1]["min_free"] > 16 * 1024


BROKEN = {
    "raises": ("raise ValueError('broken build 2')\n", "ValueError: broken build 2"),
    "hangs": (
        (
            "import machine\n\n\ndef main():\n    machine.WDT(timeout=1000)\n"
            "    while True:\n        pass\n"
        ),
        "watchdog reset",
    ),
}


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_simulated_node_rolls_back_a_version_that_fails(
    tree: Path, tmp_path: Path, keys: dict[str, Any], local_broker: MosquittoBroker, how: str
) -> None:
    """The whole boot path in the simulated node (main.py, otaslot, machine.reset,
    the watchdog): version 2's node/app raises at import, or hangs so the watchdog fires;
    three boots later the factory firmware runs again and ota/boot.json says rolled_back,
    with the reason."""
    source, reason = BROKEN[how]
    files = {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*.mpy")}
    for p in ("otaboot.mpy", "otaslot.mpy"):
        files.pop(p, None)
    broken = tmp_path / "app.py"
    broken.write_text(source)
    subprocess.run([mpy_cross(), "-o", str(tmp_path / "app.mpy"), str(broken)], check=True)
    files["node/app.mpy"] = (tmp_path / "app.mpy").read_bytes()
    bundle = make_bundle(tmp_path, 2, keys["k1"], files=files)
    flash = tmp_path / "flash"
    (flash / "ota").mkdir(parents=True)
    shutil.copy(keys["list1"], flash / "ota" / "keys.txt")
    assert Node(tree, Path(f"dir:{flash}"), HARNESS_DIR[0]).run("install", bundle)[0]["ver"] == 2
    node = SimNode("air", broker=local_broker.address, flash_dir=flash, heap=HEAP, speed=60, seed=5)
    try:
        node.start()
        node.wait_for(r"stored \d+/\d+", timeout_s=60)
        state = json.loads((flash / "ota" / "boot.json").read_text())
    finally:
        node.close()
    assert node.boots == 4, node.log[-20:]
    assert state["slot"] == "" and state["ver"] == 0 and state["bad"] == [2]
    assert state["last"]["state"] == "rolled_back" and state["last"]["boots"] == 3
    assert state["last"]["reason"] == reason
