"""The model server's surface: docs and schema only when asked for, only trusted Host names
answered (a DNS-rebinding page cannot reach it), and a /predict schema that a client can be
built from."""

from __future__ import annotations

import http.client
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from PIL import Image

from clothing_assets_tests.support import CLASSES, COLOURS
from clothing_assets_tests.system.test_serve import Server, tiny_model, write_model_atomically

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


def start(root, *flags: str) -> Server:
    version = write_model_atomically(root / "models", tiny_model())
    srv = Server(root / "models", root / "server.log", *flags)
    try:
        srv.wait_listening()
        srv.wait_version(version)
    except BaseException:
        srv.stop()
        raise
    return srv


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server as started with no flags."""
    srv = start(tmp_path_factory.mktemp("plain"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with docs on, answering two names and a domain pattern besides 127.0.0.1."""
    hosts = "models.example,127.0.0.1,*.internal.example"
    srv = start(tmp_path_factory.mktemp("docs"), "--docs", "--trusted-hosts", hosts)
    yield srv
    srv.stop()


def image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), COLOURS["hat"]).save(buffer, format=fmt)
    return buffer.getvalue()


def call(
    srv: Server, method: str, path: str, host: str, body: bytes | None = None, ctype: str = ""
) -> tuple[int, bytes]:
    """One request with exactly this Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        headers = {"Host": host, **({"Content-Type": ctype} if ctype else {})}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_docs_and_schema_are_off_unless_asked_for(plain, documented):
    here = f"127.0.0.1:{plain.port}"
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert call(plain, "GET", path, here)[0] == 404, path
    assert call(plain, "GET", "/", here)[0] == 200
    there = f"127.0.0.1:{documented.port}"
    status, page = call(documented, "GET", "/docs", there)
    assert status == 200 and b"swagger" in page.lower()
    assert call(documented, "GET", "/openapi.json", there)[0] == 200


def test_only_trusted_host_names_are_answered(plain):
    port, jpeg = plain.port, image("JPEG")
    trusted = (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost", "LOCALHOST.")
    for host in trusted:
        status, body = call(plain, "GET", "/health", host)
        assert status == 200, (host, body)
    hostile = ("rebind.example", f"rebind.example:{port}", "127.0.0.1.rebind.example",
               "localhost.rebind.example", f"[::2]:{port}", "")  # fmt: skip
    for host in hostile:
        for method, path, body, ctype in (("GET", "/health", None, ""),
                                          ("POST", "/predict", jpeg, "image/jpeg")):  # fmt: skip
            status, answer = call(plain, method, path, host, body, ctype)
            assert status == 400, (host, path, answer)
            detail = json.loads(answer)["detail"]
            assert "--trusted-hosts" in detail and "CLOTHING_SERVE_TRUSTED_HOSTS" in detail
        assert plain.predict(jpeg)[0] == 200  # the server answers its own name meanwhile


def test_the_trusted_hosts_flag_replaces_the_default_list(documented):
    port = documented.port
    for host in ("models.example", f"models.example:{port}", "a.internal.example", "127.0.0.1"):
        assert call(documented, "GET", "/health", host)[0] == 200, host
    for host in ("localhost", f"[::1]:{port}", "internal.example", "models.example.evil"):
        assert call(documented, "GET", "/health", host)[0] == 400, host


def schema_of(document: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A validator of `schema`, its `$ref`s resolved in the OpenAPI `document`."""
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def build_request(ctype: str, schema: dict[str, Any]) -> tuple[bytes, str]:
    """The body and Content-Type a generated client sends for `ctype` and its `schema`: a
    binary string is the image's bytes; an object is a form with each required binary field
    filled with a JPEG."""
    if schema.get("type") == "string" and schema.get("format") == "binary":
        return image(FORMATS[ctype]), ctype
    assert ctype == "multipart/form-data" and schema["type"] == "object", (ctype, schema)
    boundary, parts = uuid.uuid4().hex, b""
    for field in schema["required"]:
        assert schema["properties"][field] == {"type": "string", "format": "binary"}
        parts += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{field}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + image("JPEG")
            + b"\r\n"
        )
    return parts + f"--{boundary}--\r\n".encode(), f"{ctype}; boundary={boundary}"


def test_the_schema_describes_predict_and_a_request_built_from_it_works(documented):
    host = f"127.0.0.1:{documented.port}"
    status, raw = call(documented, "GET", "/openapi.json", host)
    assert status == 200
    document = json.loads(raw)
    operation = document["paths"]["/predict"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {*FORMATS, "multipart/form-data"}
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    prediction = schema_of(document, ok["$ref"])
    assert set(prediction["required"]) == {"label", "confidence", "top", "model_version"}
    for ctype, media in body["content"].items():
        data, content_type = build_request(ctype, media["schema"])
        status, answer = call(documented, "POST", "/predict", host, data, content_type)
        assert status == 200, (ctype, answer)
        validator(document, ok).validate(json.loads(answer))
        assert json.loads(answer)["label"] in CLASSES
    refused = operation["responses"]["415"]["content"]["application/json"]["schema"]
    status, answer = call(documented, "POST", "/predict", host, b"words", "text/plain")
    assert status == 415
    validator(document, refused).validate(json.loads(answer))
    with pytest.raises(jsonschema.ValidationError):  # the response schema does check something
        validator(document, ok).validate({"label": "hat", "top": []})
