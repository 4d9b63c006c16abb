"""Batch uploads over HTTP, on both databases: a canonical or raw file streamed in becomes the
same batch ``tongka ingest`` makes; the same bytes are one batch even sent twice at once; and
hostile bodies (truncated, oversized, wrongly typed, compressed, another operator's, empty,
too slow) are refused with their codes, storing nothing and leaving no spool file behind."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn

from clearing import tapstore
from clearing.batches import list_batches
from clearing.errors import InputError
from clearing.tapstore import read_day_taps
from readers.config import ReaderConfig
from tests import service_support
from tests.service_support import DAY, Service, day_files, tariffs
from tongka.access import Role
from tongka.service import uploads
from tongka.service.app import create_app
from tongka.service.centre import Centre
from tongka.testing.generate import generate_day
from tongka.testing.synth import write_raw

service = service_support.service  # the fixture: the service on each database
OP_A, OP_B = 101, 102
PARQUET = "application/vnd.apache.parquet"
SERVER_TIMEOUT_S = 20  # a bound on waiting for the live server, never an assertion of speed


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """A small generated day as canonical batch files: operator -> the file's bytes."""
    out = tmp_path_factory.mktemp("day")
    return {int(p.stem.rsplit("op", 1)[1]): p.read_bytes() for p in day_files(out, 2_000)}


@pytest.fixture(scope="module")
def card_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """The same kind of day as raw card-reader exports (demo keys): operator -> bytes."""
    out = tmp_path_factory.mktemp("raw")
    taps = generate_day(DAY, 2_000, 11, tariffs())
    paths = write_raw(taps, "card", out, ReaderConfig.demo())
    return {int(p.stem.rsplit("op", 1)[1]): p.read_bytes() for p in paths}


def post(service: Service, body: Any, *, operator: int = OP_A, role: Role = Role.OPERATOR,
         headers: dict[str, str] | None = None, **params: str) -> Any:
    party = operator if role is Role.OPERATOR else None
    return service.client.post("/v1/batches", content=body, params=params,
                               headers={**service.auth(role, party), **(headers or {})})


def assert_refused(got: Any, status: int, code: str) -> None:
    assert got.status_code == status, got.text
    assert got.headers["content-type"].startswith("application/problem+json")
    assert got.json()["code"] == code


def assert_nothing_stored(service: Service) -> None:
    assert list_batches(service.centre.engine) == []
    taps = service.centre.home / tapstore.TAPS_DIR
    assert not taps.exists() or not any(p.is_file() for p in taps.rglob("*"))


def assert_no_spool(centre: Centre) -> None:
    assert list(centre.inbox.iterdir()) == []


def metric(centre: Centre, name: str) -> float:
    return centre.metrics.registry.get_sample_value(name) or 0.0


def with_metadata(data: bytes, **meta: str) -> bytes:
    """The file with its schema metadata replaced by ``meta`` (tongka.<key>)."""
    table = pq.read_table(pa.BufferReader(data))
    out = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(
        {f"tongka.{k}".encode(): v.encode() for k, v in meta.items()}), out)
    return bytes(out.getvalue().to_pybytes())


# ---------------------------------------------------------------- what is stored


def test_a_canonical_file_becomes_a_batch_with_its_counts(
    service: Service, files: dict[int, bytes]
) -> None:
    data = files[OP_A]
    got = post(service, data, headers={"Content-Type": PARQUET}, name="../evil/op101 .parquet")
    assert got.status_code == 201, got.text
    body = got.json()
    assert got.headers["location"] == f"/v1/batches/{body['batch_id']}"
    assert body["status"] == "accepted" and body["operator"] == OP_A
    assert body["service_day"] == DAY.isoformat()
    assert body["source_name"] == "op101_.parquet"  # only a harmless last part is kept
    assert body["received"] == body["accepted"] + body["duplicates"] + body["quarantined"]
    assert body["received"] == pq.read_metadata(pa.BufferReader(data)).num_rows
    assert sum(body["errors"].values()) == body["quarantined"] > 0
    assert read_day_taps(service.centre.home, DAY).num_rows == body["accepted"]
    assert metric(service.centre, "tongka_upload_bytes_total") == len(data)
    assert metric(service.centre, "tongka_batches_accepted_total") == 1
    assert metric(service.centre, "tongka_taps_accepted_total") == body["accepted"]
    assert_no_spool(service.centre)


def test_the_same_bytes_again_are_the_stored_batch(
    service: Service, files: dict[int, bytes]
) -> None:
    first = post(service, files[OP_A])
    again = post(service, files[OP_A])
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "status": "already_ingested"}
    assert "location" not in again.headers
    assert len(list_batches(service.centre.engine)) == 1
    assert metric(service.centre, "tongka_batches_accepted_total") == 1
    assert_no_spool(service.centre)


def test_two_uploads_of_the_same_bytes_at_once_are_one_batch(
    service: Service, files: dict[int, bytes]
) -> None:
    service.key(Role.OPERATOR, OP_A)  # created before the race, not inside it
    start = threading.Barrier(2, timeout=SERVER_TIMEOUT_S)
    results: list[Any] = [None, None]

    def send(i: int) -> None:
        start.wait()
        results[i] = post(service, files[OP_A])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SERVER_TIMEOUT_S)
    assert sorted(r.status_code for r in results) == [200, 201], [r.text for r in results]
    assert results[0].json()["batch_id"] == results[1].json()["batch_id"]
    (stored,) = list_batches(service.centre.engine)
    assert stored.id == results[0].json()["batch_id"]
    assert_no_spool(service.centre)


def test_a_raw_card_export_is_read_by_its_adapter(
    service: Service, card_files: dict[int, bytes]
) -> None:
    service.centre.reader_config = ReaderConfig.demo()
    detected = post(service, card_files[OP_A], headers={"Content-Type": "text/plain"})
    assert detected.status_code == 201, detected.text
    body = detected.json()
    assert body["operator"] == OP_A and body["service_day"] == DAY.isoformat()
    assert body["received"] == body["accepted"] + body["duplicates"] + body["quarantined"] > 0
    (stored,) = list_batches(service.centre.engine)
    assert stored.source_format == "card"
    again = post(service, card_files[OP_A], format="card")
    assert (again.status_code, again.json()["batch_id"]) == (200, body["batch_id"])
    assert_no_spool(service.centre)


# ---------------------------------------------------------------- another operator's file


def test_a_file_of_another_operator_is_refused_and_nothing_stored(
    service: Service, files: dict[int, bytes]
) -> None:
    assert_refused(post(service, files[OP_B], operator=OP_A), 403, "OPERATOR_MISMATCH")
    # the rows alone say so too: no metadata, or metadata naming the uploader
    assert_refused(post(service, with_metadata(files[OP_B], service_day=DAY.isoformat())),
                   403, "OPERATOR_MISMATCH")
    assert_refused(post(service, with_metadata(files[OP_B], operator=str(OP_A),
                                               service_day=DAY.isoformat())),
                   403, "OPERATOR_MISMATCH")
    assert_nothing_stored(service)
    assert_no_spool(service.centre)


def test_bytes_another_operator_stored_are_refused_without_naming_its_batch(
    service: Service, files: dict[int, bytes]
) -> None:
    data = with_metadata(files[OP_A], service_day=DAY.isoformat())  # no operator in it
    first = post(service, data, operator=OP_A)
    assert first.status_code == 201, first.text
    other = post(service, data, operator=OP_B)
    assert_refused(other, 403, "OPERATOR_MISMATCH")
    assert first.json()["file_sha256"] not in other.text
    assert len(list_batches(service.centre.engine)) == 1


def test_a_raw_export_of_another_operator_is_refused(
    service: Service, card_files: dict[int, bytes]
) -> None:
    service.centre.reader_config = ReaderConfig.demo()
    assert_refused(post(service, card_files[OP_B], operator=OP_A), 403, "OPERATOR_MISMATCH")
    assert_nothing_stored(service)


def test_only_operator_keys_submit_batches(service: Service, files: dict[int, bytes]) -> None:
    for role in (Role.FINANCE, Role.AUDITOR, Role.ADMIN):
        assert_refused(post(service, files[OP_A], role=role), 403, "FORBIDDEN")
    assert_refused(service.client.post("/v1/batches", content=files[OP_A],
                                       headers=service.auth(Role.ISSUER, 1)), 403, "FORBIDDEN")
    assert_refused(service.client.post("/v1/batches", content=files[OP_A]), 401,
                   "AUTH_REQUIRED")
    assert_nothing_stored(service)


# ---------------------------------------------------------------- hostile bodies


def test_a_truncated_file_is_refused_with_its_code(
    service: Service, files: dict[int, bytes]
) -> None:
    data = files[OP_A]
    got = post(service, data[: len(data) // 2], headers={"Content-Type": PARQUET})
    assert_refused(got, 400, "INPUT_CORRUPT")
    assert_nothing_stored(service)
    assert_no_spool(service.centre)


def test_an_oversized_body_is_refused_up_front_and_while_streaming(
    service: Service, files: dict[int, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = files[OP_A]
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", len(data) - 1)
    with pytest.raises(InputError) as declared:  # by its Content-Length, before a byte is read
        uploads.check_body_headers(None, None, str(len(data)))
    assert declared.value.code == "INPUT_TOO_LARGE"
    assert_refused(post(service, data), 413, "INPUT_TOO_LARGE")

    def chunks() -> Iterator[bytes]:  # sent chunked: no Content-Length to go by
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    assert_refused(post(service, chunks()), 413, "INPUT_TOO_LARGE")
    assert_nothing_stored(service)
    assert_no_spool(service.centre)
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", len(data))
    assert post(service, chunks()).status_code == 201  # exactly the limit is allowed


@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=x",
                                          "application/zip"])
def test_a_content_type_no_batch_has_is_refused(
    service: Service, files: dict[int, bytes], content_type: str
) -> None:
    got = post(service, files[OP_A], headers={"Content-Type": content_type})
    assert_refused(got, 415, "UPLOAD_CONTENT_TYPE")
    assert_nothing_stored(service)


def test_a_compressed_body_is_refused_unread(service: Service) -> None:
    bomb = gzip.compress(b"\0" * (8 << 20))  # 8 MiB of zeros in a few kilobytes
    for encoding in ("gzip", "deflate", "br", "gzip, identity"):
        got = post(service, bomb, headers={"Content-Encoding": encoding})
        assert_refused(got, 415, "UPLOAD_CONTENT_TYPE")
    assert metric(service.centre, "tongka_upload_bytes_total") == 0  # not a byte was read
    assert_nothing_stored(service)
    assert_no_spool(service.centre)


def test_an_empty_body_is_refused(service: Service) -> None:
    assert_refused(post(service, b""), 400, "UPLOAD_EMPTY")
    assert_nothing_stored(service)
    assert_no_spool(service.centre)


def test_bytes_no_format_reads_are_refused(service: Service) -> None:
    assert_refused(post(service, b"hello, not a batch\n" * 10), 400, "FORMAT_UNKNOWN")
    assert_refused(post(service, b"\x00\x01", format="no-such-format"), 400, "FORMAT_UNKNOWN")
    assert_nothing_stored(service)


def test_a_raw_format_without_the_centres_keys_is_503_and_stores_nothing(
    service: Service, card_files: dict[int, bytes]
) -> None:
    service.centre.reader_config = ReaderConfig.model_construct(
        pii_key=None, tac_keys={}, qr_public_keys={}, qr_signing_keys={},
        qr_clock_skew_ms=60_000, demo_keys=False)
    assert_refused(post(service, card_files[OP_A], format="card"), 503, "READER_CONFIG")
    assert_nothing_stored(service)


# ---------------------------------------------------------------- slow clients


def test_a_body_that_stalls_is_cut_off_after_the_read_timeout(tmp_path: Path) -> None:
    async def stalling() -> AsyncIterator[bytes]:
        yield b"PAR1 and a little more"
        await anyio.sleep(60)  # cancelled by the timeout long before
        yield b"never"

    async def receive() -> None:
        async with uploads.spooled(stalling(), tmp_path, read_timeout_s=0.2):
            pytest.fail("a stalled body must not be spooled")

    with pytest.raises(InputError) as refused:
        anyio.run(receive)
    assert refused.value.code == "UPLOAD_TIMEOUT"
    assert list(tmp_path.iterdir()) == []


@contextmanager
def live_server(centre: Centre) -> Iterator[int]:
    """The application under uvicorn on a loopback port of its own, stopped afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(centre, run_jobs=False),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert server.started, "the live server did not start"
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(SERVER_TIMEOUT_S)
        sock.close()


def read_response(conn: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length: its head and body."""
    reply = b""
    while b"\r\n\r\n" not in reply and (part := conn.recv(65536)):
        reply += part
    head, _, body = reply.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (part := conn.recv(65536)):
        body += part
    return head + b"\r\n\r\n" + body


def test_a_client_that_stops_sending_gets_408(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "READ_TIMEOUT_S", 0.5)
    key = service.key(Role.OPERATOR, OP_A)
    with live_server(service.centre) as port, socket.create_connection(
        ("127.0.0.1", port), timeout=SERVER_TIMEOUT_S
    ) as conn:
        conn.sendall(
            b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
            + b"PAR1" + b"\0" * 1000  # then nothing more: the client stalls
        )
        reply = read_response(conn)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b'"code":"UPLOAD_TIMEOUT"' in reply
    assert_nothing_stored(service)
    assert_no_spool(service.centre)
