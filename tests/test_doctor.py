"""`gateway doctor` names each broken item of a configuration, with what to fix, and fails."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import MAPPINGS
from security.parties import ensure_party_key
from tests.demo_run import demo_setup
from tests.harness import free_port


def _expired_certificate(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probation")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=400))
            .not_valid_after(now - timedelta(days=3)).sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_a_broken_configuration_is_named_item_by_item(tmp_path: Path) -> None:
    home = tmp_path / "home"
    doc = yaml.safe_load((MAPPINGS / "counterparts.yaml").read_text(encoding="utf-8"))
    for inst in doc["instances"]:
        inst["base_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        ensure_party_key(home / "sim-keys", inst["name"], algorithm="ecdsa-p256")
    doc["instances"][0]["keys"] = [str(_expired_certificate(tmp_path / "expired.crt.pem"))]
    counterparts = tmp_path / "broken-counterparts.yaml"
    counterparts.write_text(yaml.safe_dump(doc), encoding="utf-8")
    (tmp_path / "unmigrated.db").touch()
    setup = demo_setup(tmp_path, home=home)
    env = setup.env | {"GATEWAY_COUNTERPARTS_FILE": str(counterparts),
                       "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'unmigrated.db'}"}
    out = subprocess.run([sys.executable, "-m", "gateway", "doctor"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()

    def line(start: str) -> str:
        return next((x for x in lines if x.startswith(start)), f"<no line {start!r}>")

    assert "GATEWAY_KEY_PASSPHRASE is not set" in line("FAIL  signing keys")
    assert "unreachable" in line("FAIL  counterpart probation ")
    assert "expired on" in line("FAIL    pinned key probation.0")
    assert "revision none" in line("FAIL  database") and "gateway db upgrade" in line("FAIL  database")
    assert line("ok    mappings").startswith("ok")
    assert line("ok      pinned key mio-kz-35.0").startswith("ok")  # a good pin next to the expired one passes
    assert lines[-1].startswith(f"{len(lines) - 1} checks: ") and " 0 failed" not in lines[-1]
