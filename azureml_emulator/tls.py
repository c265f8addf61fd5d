"""The emulator's TLS: a throwaway CA made at start (trustme), a server certificate for 127.0.0.1,
localhost and management.azure.com (reached through `tunnel`, never by DNS), and a CA bundle file
clients trust through their usual settings (REQUESTS_CA_BUNDLE for requests/azure-core/mlflow,
SSL_CERT_FILE for httpx and the ssl module)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import certifi
import trustme

from azureml_emulator.tunnel import TUNNELED_HOSTS


@dataclass(frozen=True)
class Tls:
    server_context: ssl.SSLContext
    ca_bundle: Path  # the public CAs (certifi) + this emulator's CA


def make_tls(directory: Path) -> Tls:
    """A new CA and server certificate; the bundle is written to `directory/ca-bundle.pem`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="Azure ML emulator")
    cert = ca.issue_cert("127.0.0.1", "localhost", *sorted(TUNNELED_HOSTS))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    bundle = directory / "ca-bundle.pem"
    public = Path(certifi.where()).read_bytes()
    bundle.write_bytes(public.rstrip(b"\n") + b"\n" + ca.cert_pem.bytes())
    return Tls(server_context=context, ca_bundle=bundle)
