"""What ``bench e2e --tls --auth`` adds to a spawned node: a self-signed certificate for
127.0.0.1 (openssl, made for the run), an API keys file with one key, and the serve
flags that use them; the load generator gets the key and the certificate as its CA."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from voicegate.server.security.keys import create_key


@dataclass
class SecureSetup:
    serve_args: list[str] = field(default_factory=list)
    api_key: str = ""
    cafile: str = ""
    directory: Path | None = None

    def cleanup(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def make_setup(tls: bool, auth: bool) -> SecureSetup:
    setup = SecureSetup(directory=Path(tempfile.mkdtemp(prefix="vg-bench-sec-")))
    assert setup.directory is not None
    if tls:
        cert, key = setup.directory / "cert.pem", setup.directory / "key.pem"
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("bench e2e --tls needs the openssl command")
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        setup.serve_args += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        setup.cafile = str(cert)
    if auth:
        keys = setup.directory / "keys.json"
        setup.api_key, _ = create_key(keys, "bench")
        setup.serve_args += ["--keys-file", str(keys)]
    return setup
