"""BlobDatasetStore against a real Azurite (testing/azurite_fixtures.py), plus its pure helpers."""

from __future__ import annotations

import hashlib
import os
import re
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.identity import DefaultAzureCredential
from azure.storage.blob import (
    AccountSasPermissions,
    ResourceTypes,
    generate_account_sas,
)

import storage.blob_store as blob_store_module
from backends.base import BlobChangedError, BlobStoreError, DatasetStore
from core.models import BlobRef
from core.settings import Settings
from storage.blob_store import BlobDatasetStore
from storage.blob_urls import normalize_etag, split_blob_url
from testing.azurite_fixtures import Azurite, BlobStoreFixture

DATASETS_ENV = (
    "DatasetsStorage",
    "DatasetsStorage__blobServiceUri",
    "DatasetsStorage__accountName",
    "DatasetsStorage__clientId",
)
WRONG_KEY = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZw=="


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DATASETS_ENV:
        monkeypatch.delenv(name, raising=False)


def make_settings(**values: Any) -> Settings:
    return Settings(BACKEND="local", **values)


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def put(bs: BlobStoreFixture, name: str, data: bytes, tmp_path: Path) -> BlobRef:
    src = write_file(tmp_path / f"src-{hashlib.md5(name.encode()).hexdigest()}", data)
    return bs.store.upload(src, BlobRef(container=bs.container, name=name))


def assert_no_secret(err: BaseException, *secrets: str) -> None:
    text = "".join(traceback.format_exception(err)) + repr(err) + str(vars(err))
    for secret in secrets:
        assert secret not in text
    assert err.__cause__ is None
    assert err.__context__ is None


# -- describe / upload ------------------------------------------------------------------------


@pytest.mark.azurite
def test_store_satisfies_protocol(blob_store: BlobStoreFixture) -> None:
    assert isinstance(blob_store.store, DatasetStore)


@pytest.mark.azurite
def test_describe_returns_quoted_etag_and_url(
    blob_store: BlobStoreFixture, azurite: Azurite, tmp_path: Path
) -> None:
    uploaded = put(blob_store, "dir/train set.jsonl", b'{"messages": []}\n', tmp_path)
    described = blob_store.store.describe(BlobRef(container=blob_store.container, name="dir/train set.jsonl"))

    assert described.etag is not None
    assert described.etag.startswith('"') and described.etag.endswith('"')
    assert described.etag == uploaded.etag
    assert described.url == f"{azurite.blob_endpoint}/{blob_store.container}/dir/train%20set.jsonl"
    assert described.url == uploaded.url
    assert split_blob_url(described.url) == (blob_store.container, "dir/train set.jsonl")


@pytest.mark.azurite
def test_same_content_reuploaded_gets_new_etag(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    ref = BlobRef(container=blob_store.container, name="a.jsonl")
    first = put(blob_store, "a.jsonl", b"same\n", tmp_path)
    second = put(blob_store, "a.jsonl", b"same\n", tmp_path)
    assert first.etag != second.etag
    assert blob_store.store.describe(ref).etag == second.etag


@pytest.mark.azurite
def test_describe_overrides_a_stale_etag(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    ref = put(blob_store, "a.jsonl", b"x\n", tmp_path)
    stale = ref.model_copy(update={"etag": '"0x1"', "url": None})
    assert blob_store.store.describe(stale) == ref


@pytest.mark.azurite
def test_upload_sets_content_type_and_returns_new_etag(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)  # more than one block
    ref = put(blob_store, "big.jsonl", data, tmp_path)
    props = blob_store.service.get_blob_client(blob_store.container, "big.jsonl").get_blob_properties()
    assert ref.etag == props.etag
    assert props.size == len(data)
    assert props.content_settings.content_type == "application/jsonl"
    assert ref.container == blob_store.container and ref.name == "big.jsonl"


@pytest.mark.azurite
def test_missing_blob_and_container(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    missing = BlobRef(container=blob_store.container, name="nope.jsonl")
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"blob not found: {blob_store.container}/nope.jsonl")
    ):
        blob_store.store.describe(missing)
    with pytest.raises(FileNotFoundError, match=r"blob not found: no-such-container/x\.jsonl"):
        blob_store.store.describe(BlobRef(container="no-such-container", name="x.jsonl"))
    dest = tmp_path / "out" / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="blob not found"):
        blob_store.store.download(missing, dest)
    assert not dest.exists()


# -- download ---------------------------------------------------------------------------------


@pytest.mark.azurite
def test_download_streams_exact_bytes(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 7)  # two GETs at 4 MiB chunks
    src = write_file(tmp_path / "src.jsonl", data)
    ref = blob_store.store.upload(src, BlobRef(container=blob_store.container, name="d/5mb.jsonl"))

    pinned = tmp_path / "pinned" / "5mb.jsonl"
    blob_store.store.download(ref, pinned)
    assert sha256(pinned) == sha256(src)

    latest = tmp_path / "latest.jsonl"
    blob_store.store.download(BlobRef(container=blob_store.container, name="d/5mb.jsonl"), latest)
    assert latest.read_bytes() == data


@pytest.mark.azurite
def test_download_accepts_unquoted_etag(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    ref = put(blob_store, "a.jsonl", b"hello\n", tmp_path)
    assert ref.etag is not None
    bare = ref.model_copy(update={"etag": ref.etag.strip('"')})  # Event Grid's form
    dest = tmp_path / "a.jsonl"
    blob_store.store.download(bare, dest)
    assert dest.read_bytes() == b"hello\n"


@pytest.mark.azurite
def test_download_with_stale_etag_raises_blob_changed(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    old = put(blob_store, "ds.jsonl", b"v1\n", tmp_path)
    put(blob_store, "ds.jsonl", b"v2\n", tmp_path)
    dest = tmp_path / "ds.jsonl"
    dest.write_bytes(b"previous")

    with pytest.raises(BlobChangedError) as caught:
        blob_store.store.download(old, dest)
    err = caught.value
    assert isinstance(err, RuntimeError)
    assert f"{blob_store.container}/ds.jsonl" in str(err)
    assert (err.container, err.name, err.status_code) == (blob_store.container, "ds.jsonl", 412)
    assert err.error_code == "ConditionNotMet"
    assert not dest.exists()  # no half-written or wrong-version file left behind
    assert_no_secret(err)


# -- from_settings ----------------------------------------------------------------------------


@pytest.mark.azurite
@pytest.mark.usefixtures("settings_env")
def test_from_settings_with_connection_string(azurite: Azurite, tmp_path: Path) -> None:
    container = "from-settings"
    with BlobDatasetStore.from_settings(make_settings(DatasetsStorage=azurite.connection_string)) as store:
        store.service.create_container(container)
        try:
            src = write_file(tmp_path / "x.jsonl", b"{}\n")
            ref = store.upload(src, BlobRef(container=container, name="x.jsonl"))
            assert store.describe(BlobRef(container=container, name="x.jsonl")) == ref
        finally:
            store.service.delete_container(container)


@pytest.mark.usefixtures("settings_env")
def test_from_settings_development_storage_shortcut() -> None:
    store = BlobDatasetStore.from_settings(make_settings(DatasetsStorage="UseDevelopmentStorage=true"))
    assert store.service.url == "http://127.0.0.1:10000/devstoreaccount1/"
    assert store.service.account_name == "devstoreaccount1"


@pytest.mark.usefixtures("settings_env")
def test_from_settings_with_nothing_set_names_the_settings() -> None:
    with pytest.raises(ValueError) as caught:
        BlobDatasetStore.from_settings(make_settings())
    message = str(caught.value)
    for name in ("DatasetsStorage", "DatasetsStorage__blobServiceUri", "DatasetsStorage__accountName"):
        assert name in message


@pytest.mark.usefixtures("settings_env")
def test_invalid_connection_string_is_not_echoed() -> None:
    bad = f"AccountKey={WRONG_KEY};NoEndpointHere"
    with pytest.raises(ValueError) as caught:
        BlobDatasetStore.from_settings(make_settings(DatasetsStorage=bad))
    assert "DatasetsStorage" in str(caught.value)
    assert_no_secret(caught.value, WRONG_KEY)


@pytest.mark.usefixtures("settings_env")
def test_identity_from_account_name() -> None:
    store = BlobDatasetStore.from_settings(make_settings(DatasetsStorage__accountName="mydatasets"))
    assert store.service.url == "https://mydatasets.blob.core.windows.net/"
    assert isinstance(store.service.credential, DefaultAzureCredential)


@pytest.mark.usefixtures("settings_env")
def test_identity_blob_service_uri_wins_over_account_name() -> None:
    store = BlobDatasetStore.from_settings(
        make_settings(
            DatasetsStorage__blobServiceUri="https://custom.blob.core.windows.net",
            DatasetsStorage__accountName="ignored",
        )
    )
    assert store.service.url == "https://custom.blob.core.windows.net/"
    assert isinstance(store.service.credential, DefaultAzureCredential)


@pytest.mark.usefixtures("settings_env")
def test_connection_string_wins_over_identity() -> None:
    store = BlobDatasetStore.from_settings(
        make_settings(DatasetsStorage="UseDevelopmentStorage=true", DatasetsStorage__accountName="ignored")
    )
    assert store.service.account_name == "devstoreaccount1"


@pytest.mark.usefixtures("settings_env")
@pytest.mark.parametrize(
    ("client_id", "expected"), [(None, {}), ("1111-2222", {"managed_identity_client_id": "1111-2222"})]
)
def test_identity_client_id_passed_only_when_set(
    monkeypatch: pytest.MonkeyPatch, client_id: str | None, expected: dict[str, str]
) -> None:
    calls: list[dict[str, Any]] = []

    class RecordingCredential(DefaultAzureCredential):
        def __init__(self, **kwargs: Any) -> None:
            calls.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(blob_store_module, "DefaultAzureCredential", RecordingCredential)
    BlobDatasetStore.from_settings(
        make_settings(DatasetsStorage__accountName="acct", DatasetsStorage__clientId=client_id)
    )
    assert calls == [expected]


# -- secrets stay out of errors and refs ------------------------------------------------------


@pytest.mark.azurite
def test_wrong_key_error_does_not_leak_the_key(
    blob_store: BlobStoreFixture, azurite: Azurite, tmp_path: Path
) -> None:
    put(blob_store, "a.jsonl", b"x\n", tmp_path)
    bad_cs = azurite.connection_string.replace(azurite.account_key, WRONG_KEY)
    assert WRONG_KEY in bad_cs
    ref = BlobRef(container=blob_store.container, name="a.jsonl")
    with BlobDatasetStore.from_connection_string(bad_cs) as bad:
        operations = [
            lambda: bad.describe(ref),
            lambda: bad.download(ref, tmp_path / "out.jsonl"),
            lambda: bad.upload(write_file(tmp_path / "up.jsonl", b"y\n"), ref),
        ]
        for operation in operations:
            with pytest.raises(BlobStoreError) as caught:
                operation()
            err = caught.value
            assert err.status_code == 403
            assert err.error_code == "AuthorizationFailure"
            assert f"{blob_store.container}/a.jsonl" in str(err)
            assert_no_secret(err, WRONG_KEY, azurite.account_key, "AccountKey", "SharedKey")


def _account_sas(azurite: Azurite, **permissions: bool) -> str:
    return generate_account_sas(
        account_name=azurite.account_name,
        account_key=azurite.account_key,
        resource_types=ResourceTypes(container=True, object=True),
        permission=AccountSasPermissions(**permissions),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


@pytest.mark.azurite
def test_sas_client_urls_and_errors_carry_no_token(
    blob_store: BlobStoreFixture, azurite: Azurite, tmp_path: Path
) -> None:
    put(blob_store, "a.jsonl", b"x\n", tmp_path)
    ref = BlobRef(container=blob_store.container, name="a.jsonl")

    read_only = _account_sas(azurite, read=True)
    sig = read_only.split("sig=")[1].split("&")[0]
    sas_cs = f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={read_only}"
    with BlobDatasetStore.from_connection_string(sas_cs) as store:
        described = store.describe(ref)
        assert described.url == f"{azurite.blob_endpoint}/{blob_store.container}/a.jsonl"
        assert "sig" not in (described.url or "")
        # Writing with a read-only SAS: 403 from the service, message without the token.
        with pytest.raises(BlobStoreError) as caught:
            store.upload(write_file(tmp_path / "up.jsonl", b"y\n"), ref)
        assert caught.value.status_code == 403
        assert_no_secret(caught.value, sig, read_only)

    forged = read_only.replace(sig, "Zm9yZ2Vk" + sig[8:])
    with (
        BlobDatasetStore.from_connection_string(
            f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={forged}"
        ) as store,
        pytest.raises(BlobStoreError) as caught,
    ):
        store.describe(ref)
    assert caught.value.status_code == 403
    assert_no_secret(caught.value, "Zm9yZ2Vk", sig)


def test_unreachable_endpoint_error_carries_no_token(tmp_path: Path) -> None:
    sas = "sv=2025-11-05&ss=b&srt=co&sp=r&se=2099-01-01T00:00:00Z&sig=c2VjcmV0U2lnbmF0dXJlVmFsdWU%3D"
    cs = f"BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;SharedAccessSignature={sas}"
    with BlobDatasetStore.from_connection_string(cs, retry_total=0, connection_timeout=2) as store:
        with pytest.raises(BlobStoreError) as caught:
            store.describe(BlobRef(container="datasets", name="a.jsonl"))
        assert "unreachable" in str(caught.value)
        assert_no_secret(caught.value, "c2VjcmV0U2lnbmF0dXJlVmFsdWU", "sig=")
        with pytest.raises(BlobStoreError):
            store.download(BlobRef(container="datasets", name="a.jsonl"), tmp_path / "x")
        assert not (tmp_path / "x").exists()


# -- split_blob_url / normalize_etag ----------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://acct.blob.core.windows.net/datasets/dir/file.jsonl", ("datasets", "dir/file.jsonl")),
        ("https://acct.blob.core.windows.net/datasets/file.jsonl?sv=x&sig=y", ("datasets", "file.jsonl")),
        ("http://127.0.0.1:10000/devstoreaccount1/datasets/dir/file.jsonl", ("datasets", "dir/file.jsonl")),
        ("http://localhost:10000/devstoreaccount1/datasets/file.jsonl", ("datasets", "file.jsonl")),
        ("http://azurite:10000/devstoreaccount1/datasets/file.jsonl", ("datasets", "file.jsonl")),
        ("http://devstoreaccount1.blob.localhost:10000/datasets/f.jsonl", ("datasets", "f.jsonl")),
        ("http://[::1]:10000/devstoreaccount1/datasets/f.jsonl", ("datasets", "f.jsonl")),
        (
            "https://acct.blob.core.windows.net/datasets/my%20data/a%2Bb.jsonl",
            ("datasets", "my data/a+b.jsonl"),
        ),
        ("datasets/dir/file.jsonl", ("datasets", "dir/file.jsonl")),
        ("datasets/my data.jsonl", ("datasets", "my data.jsonl")),
        ("  datasets/file.jsonl\n", ("datasets", "file.jsonl")),
        ("$root/file.jsonl", ("$root", "file.jsonl")),
    ],
)
def test_split_blob_url(location: str, expected: tuple[str, str]) -> None:
    assert split_blob_url(location) == expected


@pytest.mark.parametrize(
    "location",
    [
        "",
        "   ",
        "datasets",
        "datasets/",
        "/file.jsonl",
        "datasets/dir/",
        "Datasets/file.jsonl",
        "ab/file.jsonl",
        "bad--name/file.jsonl",
        "https://acct.blob.core.windows.net/",
        "https://acct.blob.core.windows.net/datasets",
        "https://acct.blob.core.windows.net/datasets/",
        "http://127.0.0.1:10000/devstoreaccount1/datasets",
        "ftp://acct.blob.core.windows.net/datasets/file.jsonl",
        "https:///datasets/file.jsonl",
    ],
)
def test_split_blob_url_rejects(location: str) -> None:
    with pytest.raises(ValueError, match=r"container|blob|URL"):
        split_blob_url(location)


def test_split_blob_url_error_does_not_echo_sas() -> None:
    with pytest.raises(ValueError) as caught:
        split_blob_url("https://acct.blob.core.windows.net/datasets?sv=1&sig=c2VjcmV0")
    assert "c2VjcmV0" not in str(caught.value)


@pytest.mark.parametrize(
    ("etag", "expected"),
    [
        ('"0x8DC1"', '"0x8DC1"'),
        ("0x8DC1", '"0x8DC1"'),
        (" 0x8DC1 ", '"0x8DC1"'),
        ("*", "*"),
        ('W/"abc"', 'W/"abc"'),
    ],
)
def test_normalize_etag(etag: str, expected: str) -> None:
    assert normalize_etag(etag) == expected


# -- open_stream ------------------------------------------------------------------------------


@pytest.mark.azurite
def test_open_stream_yields_the_exact_bytes_in_chunks(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024 + 11)  # three GETs at 4 MiB chunks
    ref = put(blob_store, "d/9mb.jsonl", data, tmp_path)
    chunks = list(blob_store.store.open_stream(ref))
    assert b"".join(chunks) == data
    assert len(chunks) == 3 and all(0 < len(c) <= blob_store_module.CHUNK_SIZE for c in chunks)

    bare = ref.model_copy(update={"etag": (ref.etag or "").strip('"')})  # Event Grid's form
    assert b"".join(blob_store.store.open_stream(bare)) == data
    latest = BlobRef(container=blob_store.container, name="d/9mb.jsonl")  # no etag: the current one
    assert b"".join(blob_store.store.open_stream(latest)) == data


@pytest.mark.azurite
def test_open_stream_of_an_empty_blob_yields_nothing(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    ref = put(blob_store, "empty.jsonl", b"", tmp_path)
    assert b"".join(blob_store.store.open_stream(ref)) == b""


@pytest.mark.azurite
def test_open_stream_errors_are_raised_on_open(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(f"blob not found: {blob_store.container}/nope")):
        blob_store.store.open_stream(BlobRef(container=blob_store.container, name="nope"))
    with pytest.raises(FileNotFoundError, match=r"blob not found: no-such-container/x\.jsonl"):
        blob_store.store.open_stream(BlobRef(container="no-such-container", name="x.jsonl"))

    old = put(blob_store, "ds.jsonl", b"v1\n", tmp_path)
    put(blob_store, "ds.jsonl", b"v2\n", tmp_path)
    with pytest.raises(BlobChangedError) as caught:
        blob_store.store.open_stream(old)
    err = caught.value
    assert (err.container, err.name, err.status_code, err.error_code) == (
        blob_store.container,
        "ds.jsonl",
        412,
        "ConditionNotMet",
    )
    assert_no_secret(err)


@pytest.mark.azurite
def test_open_stream_overwritten_mid_way_raises_blob_changed(
    blob_store: BlobStoreFixture, tmp_path: Path
) -> None:
    """Later chunks are pinned to the first one's version, with or without an etag asked for."""
    data = os.urandom(9 * 1024 * 1024)
    for pinned in (True, False):
        ref = put(blob_store, "moving.jsonl", data, tmp_path)
        asked = ref if pinned else BlobRef(container=blob_store.container, name="moving.jsonl")
        chunks = blob_store.store.open_stream(asked)
        first = next(chunks)
        assert first == data[: len(first)]
        put(blob_store, "moving.jsonl", b"v2" + data, tmp_path)  # overwritten while streaming
        with pytest.raises(BlobChangedError) as caught:
            list(chunks)
        assert caught.value.status_code == 412
        assert_no_secret(caught.value)


def test_open_stream_unreachable_error_carries_no_token() -> None:
    sas = "sv=2025-11-05&ss=b&srt=co&sp=r&se=2099-01-01T00:00:00Z&sig=c2VjcmV0U2lnbmF0dXJlVmFsdWU%3D"
    cs = f"BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;SharedAccessSignature={sas}"
    with BlobDatasetStore.from_connection_string(cs, retry_total=0, connection_timeout=2) as store:
        with pytest.raises(BlobStoreError, match="unreachable") as caught:
            store.open_stream(BlobRef(container="datasets", name="a.jsonl"))
        assert_no_secret(caught.value, "c2VjcmV0U2lnbmF0dXJlVmFsdWU", "sig=")


def test_fake_open_stream_matches_download(tmp_path: Path) -> None:
    from testing.fakes import FakeAzure

    azure = FakeAzure()
    data = os.urandom(10_000)
    ref = azure.put_blob("datasets", "a.jsonl", data)
    assert b"".join(azure.open_stream(ref)) == data
    assert len(list(azure.open_stream(ref))) == 3  # 4096-byte chunks
    with pytest.raises(FileNotFoundError):
        azure.open_stream(BlobRef(container="datasets", name="missing.jsonl"))
    azure.put_blob("datasets", "a.jsonl", b"v2")
    with pytest.raises(BlobChangedError):
        azure.open_stream(ref)
    assert azure.count("download") == 4


def test_no_storage_refuses_open_stream() -> None:
    from backends.registry import _NoStorage

    with pytest.raises(RuntimeError, match="uses no datasets storage"):
        _NoStorage("the scorer").open_stream(BlobRef(container="c", name="x.jsonl"))


# -- upload_chunks ----------------------------------------------------------------------------


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.azurite
def test_upload_chunks_stores_the_bytes_and_returns_the_new_etag(
    blob_store: BlobStoreFixture, azurite: Azurite
) -> None:
    ref = BlobRef(container=blob_store.container, name="chunks/small set.jsonl")
    first = blob_store.store.upload_chunks(iter([b'{"a": 1}\n', b'{"b": 2}\n']), ref)
    client = blob_store.service.get_blob_client(blob_store.container, "chunks/small set.jsonl")
    props = client.get_blob_properties()
    assert client.download_blob().readall() == b'{"a": 1}\n{"b": 2}\n'
    assert first.etag == props.etag and first.etag is not None and first.etag.startswith('"')
    assert props.content_settings.content_type == "application/jsonl"
    assert first.url == f"{azurite.blob_endpoint}/{blob_store.container}/chunks/small%20set.jsonl"
    assert blob_store.store.describe(ref) == first

    second = blob_store.store.upload_chunks([b"v2\n"], ref)  # overwrite; any iterable will do
    assert second.etag != first.etag
    assert client.download_blob().readall() == b"v2\n"


@pytest.mark.azurite
def test_upload_chunks_of_an_empty_stream_is_an_empty_blob(blob_store: BlobStoreFixture) -> None:
    ref = blob_store.store.upload_chunks(
        iter(()), BlobRef(container=blob_store.container, name="chunks/empty")
    )
    assert ref.etag
    assert (
        blob_store.service.get_blob_client(blob_store.container, "chunks/empty").get_blob_properties().size
        == 0
    )
    assert b"".join(blob_store.store.open_stream(ref)) == b""


@pytest.mark.azurite
def test_upload_chunks_large_stream_is_staged_in_blocks(blob_store: BlobStoreFixture) -> None:
    data = os.urandom(11 * 1024 * 1024 + 5)  # three 4 MiB blocks, fed in odd-sized chunks
    ref = blob_store.store.upload_chunks(
        _pieces(data, 1_000_003), BlobRef(container=blob_store.container, name="chunks/big.jsonl")
    )
    client = blob_store.service.get_blob_client(blob_store.container, "chunks/big.jsonl")
    assert client.download_blob().readall() == data
    committed, _ = client.get_block_list("committed")
    assert len(committed) == 3
    assert ref.etag == client.get_blob_properties().etag


@pytest.mark.azurite
def test_upload_chunks_that_fail_mid_way_commit_nothing(blob_store: BlobStoreFixture, tmp_path: Path) -> None:
    before = put(blob_store, "chunks/kept.jsonl", b"old\n", tmp_path)

    def broken() -> Iterator[bytes]:
        yield os.urandom(5 * 1024 * 1024)  # a block is staged
        raise ConnectionResetError("the producer died")

    with pytest.raises(ConnectionResetError, match="the producer died"):
        blob_store.store.upload_chunks(
            broken(), BlobRef(container=blob_store.container, name="chunks/kept.jsonl")
        )
    assert (
        blob_store.store.describe(BlobRef(container=blob_store.container, name="chunks/kept.jsonl")) == before
    )
    assert b"".join(blob_store.store.open_stream(before)) == b"old\n"


@pytest.mark.azurite
def test_upload_chunks_errors_are_sanitized(blob_store: BlobStoreFixture) -> None:
    with pytest.raises(FileNotFoundError, match=r"blob not found: no-such-container/x\.jsonl") as caught:
        blob_store.store.upload_chunks([b"x\n"], BlobRef(container="no-such-container", name="x.jsonl"))
    assert_no_secret(caught.value)


def test_fake_upload_chunks_is_an_upload_with_a_content_etag() -> None:
    from testing.fakes import FakeAzure

    azure = FakeAzure(failures={"upload": 1})
    ref = BlobRef(container="datasets", name="a.jsonl")
    with pytest.raises(ConnectionError):
        azure.upload_chunks([b"x\n"], ref)
    uploaded = azure.upload_chunks(iter([b"x", b"\n"]), ref)
    assert uploaded == azure.put_blob("datasets", "a.jsonl", b"x\n")  # same name, same bytes, same etag
    assert azure.upload_chunks([b"y\n"], ref).etag != uploaded.etag
    assert azure.count("upload") == 3

    def broken() -> Iterator[bytes]:
        yield b"z\n"
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        azure.upload_chunks(broken(), ref)
    assert azure.blobs[("datasets", "a.jsonl")] == b"y\n"


def test_no_storage_refuses_upload_chunks() -> None:
    from backends.registry import _NoStorage

    with pytest.raises(RuntimeError, match="uses no datasets storage"):
        _NoStorage("the scorer").upload_chunks([b"x\n"], BlobRef(container="c", name="x.jsonl"))
