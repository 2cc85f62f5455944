"""Signed firmware bundles for over-the-air updates (docs/ota.md).

A bundle is a directory: ``manifest.txt`` (what the node checks), ``manifest.sig`` (the RSA
signature of the manifest's exact bytes) and ``files/`` (the compiled firmware, laid out as on
the board). The manifest is line-oriented so the node never holds it whole in its heap: a first
line of compact, key-sorted JSON (the header), then one line per file, ``<size> <sha256> <path>``.

Keys are RSA-3072 (chosen by measurement, docs/ota.md): the node checks a signature with
``pow(s, 65537, n)`` and its native SHA-256 (firmware/node/otasig.py). Signing uses the
``cryptography`` package (the ``tools`` extra), imported only by the commands that sign.
A key's id is the first 16 hex digits of the SHA-256 of its modulus, so an id cannot name the
wrong key.

A key list (``keys.txt`` + ``keys.sig``) is signed the same way: header ``{"v":1,"seq":N,
"key":signer,"revoked":[ids]}``, then ``<id> <modulus hex>`` per trusted key. A node accepts
it only when its ``seq`` is higher than the one it holds and its signer is a key it trusts that
the new list keeps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boards import KINDS
from host_tools.field.build import FIRMWARE_DIR, SOURCE_FILES, build_firmware, find_mpy_cross
from host_tools.field.errors import FieldError

BOARDS = ("esp32-devkitc", "lolin-d32", "sim", "sim-battery")
KEY_BITS = 3072
MANIFEST = "manifest.txt"
SIGNATURE = "manifest.sig"
FILES = "files"
# Files that stay at the board's root and are not part of a slot: main.py runs the slot
# chooser (main.py, otaslot), which must not depend on the slot it chooses.
NOT_IN_BUNDLE = SOURCE_FILES | {"otaslot.mpy"}

_CRYPTO_HINT = "Install the signing tools: pip install 'cityedge[tools]'"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ModuleNotFoundError as exc:
        raise FieldError("signing needs the 'cryptography' package", hint=_CRYPTO_HINT) from exc
    return rsa


def key_id(n: int) -> str:
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    kid: str
    n: int

    def line(self) -> str:
        return f"{self.kid} {self.n:x}"


def load_public(path: Path) -> PublicKey:
    try:
        doc = json.loads(path.read_text())
        n = int(doc["n"], 16)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FieldError(
            f"{path}: not a CityEdge public key ({exc})",
            hint="Give the .pub.json file 'cityedge release keygen' wrote.",
        ) from exc
    return PublicKey(key_id(n), n)


def keygen(out_dir: Path, name: str, passphrase: bytes | None) -> tuple[Path, Path, str]:
    """A new RSA-3072 key pair: ``<name>.key.pem`` (PKCS#8, encrypted when a passphrase is
    given) and ``<name>.pub.json`` (what the nodes hold). Returns both paths and the key id."""
    rsa = _crypto()
    from cryptography.hazmat.primitives import serialization as ser

    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out_dir / f"{name}.key.pem", out_dir / f"{name}.pub.json"
    for p in (priv_path, pub_path):
        if p.exists():
            raise FieldError(f"{p} exists", hint="Choose another name; never overwrite a key.")
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    enc = ser.BestAvailableEncryption(passphrase) if passphrase else ser.NoEncryption()
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, enc)
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    n = key.public_key().public_numbers().n
    kid = key_id(n)
    pub_path.write_text(json.dumps({"id": kid, "name": name, "n": f"{n:x}"}) + "\n")
    return priv_path, pub_path, kid


def _load_private(path: Path, passphrase: bytes | None) -> Any:
    _crypto()
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = ser.load_pem_private_key(path.read_bytes(), password=passphrase)
    except (OSError, ValueError, TypeError) as exc:
        raise FieldError(
            f"cannot load the private key {path}: {exc}",
            hint="Give the .key.pem file and its passphrase (--passphrase-env NAME_OF_VARIABLE).",
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise FieldError(
            f"{path} is not an RSA key of 2048 bits or more",
            hint="Make one with 'cityedge release keygen'.",
        )
    return key


def sign_bytes(key_path: Path, data: bytes, passphrase: bytes | None = None) -> tuple[bytes, str]:
    """PKCS#1 v1.5 / SHA-256 signature of `data` and the signing key's id."""
    key = _load_private(key_path, passphrase)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return bytes(sig), key_id(key.public_key().public_numbers().n)


def _header_line(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def manifest_bytes(header: dict[str, Any], files: dict[str, bytes]) -> bytes:
    lines = [_header_line(header)]
    for path in sorted(files):
        data = files[path]
        lines.append(f"{len(data)} {hashlib.sha256(data).hexdigest()} {path}\n".encode())
    return b"".join(lines)


def read_manifest(bundle: Path) -> tuple[dict[str, Any], list[tuple[int, str, str]]]:
    try:
        text = (bundle / MANIFEST).read_bytes().decode("ascii").splitlines()
        header = json.loads(text[0])
        entries = [(int(s), h, p) for s, h, p in (line.split(" ", 2) for line in text[1:])]
    except (OSError, ValueError, IndexError) as exc:
        raise FieldError(
            f"{bundle} is not a bundle ({exc})",
            hint="Give the directory 'cityedge release build' wrote.",
        ) from exc
    return header, entries


def build_bundle(
    out: Path,
    version: int,
    label: str | None = None,
    kinds: tuple[str, ...] = KINDS,
    boards: tuple[str, ...] = BOARDS,
    firmware_dir: Path = FIRMWARE_DIR,
    downgrade: bool = False,
    now: float | None = None,
) -> dict[str, Any]:
    """Compile `firmware_dir` as deploy does and write an unsigned bundle to `out`."""
    if version < 1:
        raise FieldError(
            f"version {version}: must be a positive integer",
            hint="Give --version one more than the last release's.",
        )
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise FieldError(f"unknown node kind {bad[0]!r}", hint=f"Kinds: {', '.join(KINDS)}.")
    if out.exists() and any(out.iterdir()):
        raise FieldError(f"{out} is not empty", hint="Give a new directory for the bundle.")
    cross = find_mpy_cross()
    build = build_firmware(firmware_dir, cross)
    files = {
        p.lstrip("/"): data for p, data in build.files.items() if p.lstrip("/") not in NOT_IN_BUNDLE
    }
    header = {
        "v": 1,
        "version": version,
        "label": label or build.label,
        "abi": build.mpy,
        "min_mp": cross.micropython_version,
        "kinds": sorted(kinds),
        "boards": sorted(boards),
        "files": len(files),
        "total": sum(len(d) for d in files.values()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "downgrade": downgrade,
        "key": "",
    }
    out.mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        dst = out / FILES / path
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    (out / MANIFEST).write_bytes(manifest_bytes(header, files))
    return header


def sign_bundle(bundle: Path, key_path: Path, passphrase: bytes | None = None) -> str:
    """Set the key id in the manifest's header, then sign its exact bytes. Checks every file
    against the manifest first, so a bundle changed after the build is not signed."""
    header, entries = read_manifest(bundle)
    files: dict[str, bytes] = {}
    for size, digest, path in entries:
        data = (bundle / FILES / path).read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise FieldError(
                f"{path} in {bundle} does not match its manifest entry",
                hint="Build the bundle again; do not edit a built bundle.",
            )
        files[path] = data
    _, kid = sign_bytes(key_path, b"", passphrase)
    header["key"] = kid
    manifest = manifest_bytes(header, files)
    sig, _ = sign_bytes(key_path, manifest, passphrase)
    (bundle / MANIFEST).write_bytes(manifest)
    (bundle / SIGNATURE).write_bytes(sig)
    return kid


def key_list(
    out: Path,
    trusted: list[PublicKey],
    revoked: list[str],
    seq: int,
    key_path: Path,
    passphrase: bytes | None = None,
) -> bytes:
    """Write a signed key list (``keys.txt`` + ``keys.sig``) to `out`; returns its bytes."""
    if len(trusted) < 2:
        raise FieldError(
            "a key list needs at least two trusted keys",
            hint="Keep a second key offline so the first can be rotated out.",
        )
    ids = {k.kid for k in trusted}
    for kid in revoked:
        if kid in ids:
            raise FieldError(
                f"key {kid} is both trusted and revoked", hint="Leave a revoked key out of --trust."
            )
    _, signer = sign_bytes(key_path, b"", passphrase)
    if signer not in ids:
        raise FieldError(
            f"the signing key {signer} is not in the list it signs",
            hint="Sign with one of the keys the new list trusts.",
        )
    header = {"v": 1, "seq": seq, "key": signer, "revoked": sorted(set(revoked))}
    text = _header_line(header) + b"".join(k.line().encode() + b"\n" for k in trusted)
    sig, _ = sign_bytes(key_path, text, passphrase)
    out.mkdir(parents=True, exist_ok=True)
    (out / "keys.txt").write_bytes(text)
    (out / "keys.sig").write_bytes(sig)
    return text


# -- CLI ------------------------------------------------------------------------------------


def _passphrase(args: argparse.Namespace) -> bytes | None:
    name = getattr(args, "passphrase_env", None)
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise FieldError(
            f"environment variable {name} is not set",
            hint=f"export {name}=... (the key's passphrase) and run again.",
        )
    return value.encode()


def _cmd_keygen(args: argparse.Namespace) -> int:
    priv, pub, kid = keygen(Path(args.out), args.name, _passphrase(args))
    print(f"key {kid}: private {priv} (keep it offline), public {pub} (goes to the nodes)")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    header = build_bundle(
        Path(args.out),
        args.version,
        args.label,
        tuple(args.kinds.split(",")),
        tuple(args.boards.split(",")),
        downgrade=args.downgrade,
    )
    print(
        f"bundle {args.out}: version {header['version']} ({header['label']}), "
        f"{header['files']} files, {header['total']} bytes, mpy v{header['abi']}; "
        "sign it with 'cityedge release sign'"
    )
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    kid = sign_bundle(Path(args.bundle), Path(args.key), _passphrase(args))
    print(f"signed {args.bundle} with key {kid}")
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    trusted = [load_public(Path(p)) for p in args.trust]
    key_list(
        Path(args.out), trusted, args.revoke or [], args.seq, Path(args.key), _passphrase(args)
    )
    print(
        f"key list {args.out}/keys.txt: seq {args.seq}, trusted "
        f"{', '.join(k.kid for k in trusted)}; revoked {', '.join(args.revoke or []) or 'none'}"
    )
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("release", help="build and sign firmware bundles for over-the-air updates")
    rs = p.add_subparsers(dest="release_command", metavar="RELEASE_COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    pp = argparse.ArgumentParser(add_help=False)
    pp.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="environment variable holding the private key's passphrase",
    )

    k = rs.add_parser("keygen", parents=[pp], help="make an RSA-3072 signing key pair")
    k.add_argument("--name", required=True, help="file name stem, e.g. city-2026-a")
    k.add_argument("--out", required=True, help="directory (on the offline medium)")
    k.set_defaults(func=_cmd_keygen)

    b = rs.add_parser("build", help="compile firmware/ into an unsigned bundle")
    b.add_argument("--version", type=int, required=True, help="monotonic integer, > the last")
    b.add_argument("--label", help="human label (default: FW + tree hash)")
    b.add_argument("--kinds", default=",".join(KINDS), help="comma-separated node kinds")
    b.add_argument("--boards", default=",".join(BOARDS), help="comma-separated board names")
    b.add_argument(
        "--downgrade",
        action="store_true",
        help="allow nodes on a higher version to install this one",
    )
    b.add_argument("--out", required=True, help="new directory for the bundle")
    b.set_defaults(func=_cmd_build)

    s = rs.add_parser("sign", parents=[pp], help="sign a bundle's manifest")
    s.add_argument("bundle", help="the bundle directory made by cityedge release build")
    s.add_argument("--key", required=True, help="the private key (.key.pem)")
    s.set_defaults(func=_cmd_sign)

    kl = rs.add_parser("keys", parents=[pp], help="sign a trusted-key list (rotation, revocation)")
    kl.add_argument("--trust", nargs="+", required=True, help=".pub.json files the nodes trust")
    kl.add_argument("--revoke", nargs="*", help="key ids to revoke")
    kl.add_argument("--seq", type=int, required=True, help="higher than the nodes' current list")
    kl.add_argument("--key", required=True, help="private key of one of the trusted keys")
    kl.add_argument("--out", required=True, help="where to write the signed key list")
    kl.set_defaults(func=_cmd_keys)
