"""TLS from certificate files, on gRPC and HTTP alike (a self-signed certificate made by openssl)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc
from tests.conftest import ServerThread, make_config


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    served = ServerThread(make_config(tls={"cert_file": str(cert), "key_file": str(key)})).load()
    yield served, cert
    served.stop()


def test_grpc_and_http_serve_tls_only(tls_server: tuple[ServerThread, Path]) -> None:
    served, cert = tls_server
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{served.port}", credentials) as channel:
        answer = pb_grpc.TaskRouterStub(channel).Classify(
            pb.ClassifyRequest(router="support", prompt="How do I reset my password?"), timeout=30
        )
        assert answer.task == "customer-qa"
    with pytest.raises(grpc.RpcError):  # plaintext is not spoken on a TLS port
        served.stub.Classify(pb.ClassifyRequest(router="support", prompt="hi"), timeout=5)

    assert httpx.get(f"https://127.0.0.1:{served.http_port}/v1/models", verify=str(cert)).status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{served.http_port}/v1/models", timeout=5)


def test_a_certificate_needs_its_key(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    with pytest.raises(ValueError, match="tls.cert_file and tls.key_file go together"):
        make_config(tls={"cert_file": str(tmp_path / "cert.pem")})
