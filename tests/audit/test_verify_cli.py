"""`gateway audit verify` and the chain export as commands: exit 0 when intact, 1 naming the first bad record."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import typer
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from gateway.audit.chain import append, public_key_from_jwk, signer_from_keystore, write_checkpoint
from gateway.cli.audit_verify import export_log, verify
from security.keys import KeyStore, public_jwk
from tests.audit.test_chain import N, T0, Log, _log, edit_field, entry, forge_checkpoint_signature

# Registered the way gateway/cli/audit.py registers them: one line each.
app = typer.Typer()
app.command("verify")(verify)
app.command("export")(export_log)
runner = CliRunner()


def _env(tmp_path: Path, passphrase: str = "") -> dict[str, str]:
    return {"GATEWAY_KEY_PASSPHRASE": passphrase, "GATEWAY_KEYS_DIR": str(tmp_path / "no-keys")}


def _make(url: str, *, tamper=None) -> Log:  # noqa: ANN001
    async def go() -> Log:
        made = await _log(url)
        if tamper is not None:
            await made.as_attacker(tamper)
        await made.engines.dispose()
        return made

    return asyncio.run(go())


def _jwks(tmp_path: Path, key: ed25519.Ed25519PrivateKey) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [dict(public_jwk(key.public_key()), kid="k1", alg="EdDSA", use="sig")]}))
    assert public_key_from_jwk(json.loads(path.read_text())["keys"][0]) == key.public_key()
    return path


def test_an_intact_log_exits_0(database_url: str, tmp_path: Path) -> None:
    made = _make(database_url)
    result = runner.invoke(app, ["verify", "--database-url", database_url, "--jwks", str(_jwks(tmp_path, made.key))],
                           env=_env(tmp_path))
    assert result.exit_code == 0, result.output + result.stderr
    assert f"intact (the database): {N} records, head seq {N}" in result.stdout
    assert "1 checkpoints verified (signature and head)" in result.stdout


def test_an_edited_record_exits_1_naming_it(database_url: str, tmp_path: Path) -> None:
    made = _make(database_url, tamper=edit_field)
    result = runner.invoke(app, ["verify", "--database-url", database_url, "--jwks", str(_jwks(tmp_path, made.key))],
                           env=_env(tmp_path))
    assert result.exit_code == 1
    assert "first bad record: seq 5: edited" in result.stderr
    assert "4 records intact before it" in result.stderr


def test_a_forged_checkpoint_exits_1(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    made = _make(url, tamper=forge_checkpoint_signature)
    result = runner.invoke(app, ["verify", "--database-url", url, "--jwks", str(_jwks(tmp_path, made.key))],
                           env=_env(tmp_path))
    assert result.exit_code == 1
    assert f"seq {N}: bad-checkpoint-signature" in result.stderr


def test_without_keys_the_chain_is_checked_and_the_missing_signature_check_said(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    _make(url)
    result = runner.invoke(app, ["verify", "--database-url", url], env=_env(tmp_path))
    assert result.exit_code == 0
    assert "signatures NOT checked" in result.stderr and "(head only)" in result.stdout


def test_export_then_verify_the_file_offline(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    made = _make(url)
    path = tmp_path / "chain.jsonl"
    result = runner.invoke(app, ["export", "--database-url", url, "-o", str(path)], env=_env(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert f"exported {N} exchange-log records" in result.stderr
    jwks = str(_jwks(tmp_path, made.key))

    result = runner.invoke(app, ["verify", "--file", str(path), "--jwks", jwks], env=_env(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "1 checkpoints verified" in result.stdout

    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join(lines[:6] + lines[7:]) + b"\n")  # record 7 removed
    result = runner.invoke(app, ["verify", "--file", str(path), "--jwks", jwks], env=_env(tmp_path))
    assert result.exit_code == 1
    assert "first bad record: seq 7: deleted" in result.stderr

    path.write_bytes(b"\n".join(lines[:3] + [b"{not json"] + lines[3:]) + b"\n")
    result = runner.invoke(app, ["verify", "--file", str(path), "--jwks", jwks], env=_env(tmp_path))
    assert result.exit_code == 1
    assert "line 4: not JSON" in result.stderr


def test_the_key_store_verifies_with_the_passphrase_only(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    keys_dir = tmp_path / "keys"
    keys = KeyStore(keys_dir, passphrase="pass phrase")
    keys.generate()

    async def build() -> None:
        made = await _log(url, checkpoint=False)
        async with made.engines.write.begin() as conn:
            await conn.run_sync(write_checkpoint, sign=signer_from_keystore(keys), now=T0)
            await conn.run_sync(append, [entry(40)])
        await made.engines.dispose()

    asyncio.run(build())
    args = ["verify", "--database-url", url, "--keys-dir", str(keys_dir)]
    result = runner.invoke(app, args, env=_env(tmp_path, "pass phrase"))
    assert result.exit_code == 0, result.stderr
    assert "1 checkpoints verified (signature and head)" in result.stdout
    result = runner.invoke(app, args, env=_env(tmp_path))
    assert result.exit_code == 2
    assert "needs GATEWAY_KEY_PASSPHRASE" in result.stderr and "--jwks" in result.stderr


def test_unusable_sources_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"],
                           env=_env(tmp_path))
    assert result.exit_code == 2 and "no database at" in result.stderr
    assert not (tmp_path / "none.db").exists()
    result = runner.invoke(app, ["verify", "--file", str(tmp_path / "none.jsonl")], env=_env(tmp_path))
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_as_a_process_the_exit_code_reaches_the_shell(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    _make(url, tamper=edit_field)
    code = "import typer; from gateway.cli.audit_verify import verify; typer.run(verify)"
    done = subprocess.run([sys.executable, "-c", code, "--database-url", url, "--no-progress"],
                          capture_output=True, text=True, env={"GATEWAY_KEYS_DIR": str(tmp_path / "none"),
                                                               "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "seq 5: edited" in done.stderr
