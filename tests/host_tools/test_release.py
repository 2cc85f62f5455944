"""`cityedge release keygen/build/sign/keys` (host_tools/field/release.py) through the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from host_tools.cli import main
from host_tools.field import release
from host_tools.field.errors import FieldError


def _check_manifest(b: Path, kid: str) -> None:
    head, entries = release.read_manifest(b)
    assert head["key"] == kid and head["version"] == 3 and head["label"] == "fix-pm"
    assert head["kinds"] == ["air"] and head["abi"].count(".") == 1 and head["min_mp"]
    assert head["files"] == len(entries) and head["total"] == sum(s for s, _, _ in entries)
    paths = {p for _, _, p in entries}
    assert {"node/app.mpy", "node/ota.mpy", "node/otasig.mpy"} <= paths
    assert not {"main.py", "otaboot.mpy", "otaslot.mpy"} & paths
    for size, digest, path in entries:
        data = (b / "files" / path).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == digest


def _check_signature(b: Path, key: Path) -> None:
    # The signature verifies with the public key over the manifest's exact bytes.
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    priv = serialization.load_pem_private_key(key.read_bytes(), None)
    priv.public_key().verify(
        (b / "manifest.sig").read_bytes(),  # type: ignore[union-attr, call-arg]
        (b / "manifest.txt").read_bytes(),
        padding.PKCS1v15(),  # type: ignore[arg-type]
        hashes.SHA256(),
    )


def _check_key_lists(tmp_path: Path, keys: Path, kid: str) -> None:
    # Key lists: two keys at least, the signer among them.
    kl = tmp_path / "kl"
    pubs = [str(keys / "city-a.pub.json"), str(keys / "city-b.pub.json")]
    signed_by_a = ["--seq", "1", "--key", str(keys / "city-a.key.pem"), "--out", str(kl)]
    assert main(["release", "keys", "--trust", *pubs, *signed_by_a]) == 0
    first = json.loads((kl / "keys.txt").read_text().splitlines()[0])
    assert first == {"key": kid, "revoked": [], "seq": 1, "v": 1}
    signed_by_b = ["--seq", "2", "--key", str(keys / "city-b.key.pem"), "--out", str(kl)]
    assert main(["release", "keys", "--trust", pubs[1], *signed_by_b]) == 1


def test_release_commands_make_a_signed_bundle_the_manifest_describes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert main(["release", "keygen", "--name", "city-a", "--out", str(keys)]) == 0
    assert main(["release", "keygen", "--name", "city-b", "--out", str(keys)]) == 0
    assert (keys / "city-a.key.pem").stat().st_mode & 0o077 == 0  # private: owner only
    assert main(["release", "keygen", "--name", "city-a", "--out", str(keys)]) == 1  # no overwrite
    b = tmp_path / "b"
    build = ["--version", "3", "--label", "fix-pm", "--kinds", "air", "--out", str(b)]
    assert main(["release", "build", *build]) == 0
    assert main(["release", "sign", str(b), "--key", str(keys / "city-a.key.pem")]) == 0
    kid = json.loads((keys / "city-a.pub.json").read_text())["id"]
    _check_manifest(b, kid)
    _check_signature(b, keys / "city-a.key.pem")
    # A file changed after the build is not signed.
    (b / "files" / "node" / "app.mpy").write_bytes(b"evil")
    capsys.readouterr()
    assert main(["release", "sign", str(b), "--key", str(keys / "city-b.key.pem")]) == 1
    assert "Build the bundle again" in capsys.readouterr().err
    _check_key_lists(tmp_path, keys, kid)


def test_encrypted_private_key_needs_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CE_PASS", "correct horse")
    assert (
        main(
            [
                "release",
                "keygen",
                "--name",
                "k",
                "--out",
                str(tmp_path),
                "--passphrase-env",
                "CE_PASS",
            ]
        )
        == 0
    )
    with pytest.raises(FieldError, match="cannot load the private key"):
        release.sign_bytes(tmp_path / "k.key.pem", b"x", None)
    sig, _ = release.sign_bytes(tmp_path / "k.key.pem", b"x", b"correct horse")
    assert len(sig) == release.KEY_BITS // 8
