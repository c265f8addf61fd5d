"""scripts/download_dataset.py, offline, on real files: hub-shaped parquet, JSONL, Azurite uploads.

No test touches the Hugging Face hub: every test runs with HF_HUB_OFFLINE=1 and HF_HOME /
HF_DATASETS_CACHE pointing at an empty temporary directory. `datasets` and `huggingface_hub` read
those variables once, at import, and this pytest process may have imported them already, so the
`hf_offline` fixture sets the variables *and* the module constants read from them. One test also
runs the script as a fresh process, where only the variables are involved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.naming import is_dataset_blob
from core.validation import validate_file
from scripts import download_dataset as dd
from testing.azurite_fixtures import Azurite, BlobStoreFixture

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "download_dataset.py"
KEYS = ["prompt", "prompt_id", "messages"]
TRAIN_ROWS = 500
TEST_ROWS = 100


# -- fixtures ----------------------------------------------------------------------------------


def _hf_env(home: Path) -> dict[str, str]:
    return {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(home),
        "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_HUB_CACHE": str(home / "hub"),
    }


@pytest.fixture(autouse=True)
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline mode and an empty, per-test Hugging Face cache (see the module docstring)."""
    import datasets.config
    import huggingface_hub.constants

    home = tmp_path / "hf-home"
    for name, value in _hf_env(home).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_CACHE_HOME", str(home))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", str(home / "datasets" / "downloads"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    return home


def conversation(split: str, i: int) -> dict[str, Any]:
    """A row shaped like ultrachat_200k (parquet struct order: content, role); 1-3 exchanges."""
    prompt = f"[{split} {i}] Explain topic {i} — naïve café, 你好?"
    messages = [{"content": prompt, "role": "user"}, {"content": f"Answer {i}: ✓ done.", "role": "assistant"}]
    for turn in range(i % 3):
        messages.append({"content": f"Follow-up {turn} on {i}?", "role": "user"})
        messages.append({"content": f"Reply {turn} on {i}.", "role": "assistant"})
    return {"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(), "messages": messages}


@pytest.fixture(scope="module")
def ultrachat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<tmp>/ultrachat/data/{train_sft,test_sft}-00000-of-00001.parquet`, like the hub repo."""
    root = tmp_path_factory.mktemp("hub-copy") / "ultrachat"
    (root / "data").mkdir(parents=True)
    for split, n in (("train_sft", TRAIN_ROWS), ("test_sft", TEST_ROWS)):
        table = pa.Table.from_pylist([conversation(split, i) for i in range(n)])
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    (root / "README.md").write_text("# local copy\n")
    # `hf download --local-dir` leaves metadata in .cache/: it must not be read as data.
    (root / ".cache" / "huggingface").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([conversation("junk", 0)]), root / ".cache" / "huggingface" / "x.parquet"
    )
    return root


@pytest.fixture(scope="module")
def chats_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jsonl") / "chats.jsonl"
    rows = [conversation("jsonl", i) for i in range(30)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def source_rows(split: str, n: int) -> dict[str, dict[str, Any]]:
    return {r["prompt_id"]: r for r in (conversation(split, i) for i in range(n))}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n") and b"\r" not in data
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def run(*argv: str | Path) -> int:
    return dd.main([str(a) for a in argv])


def assert_shape(rows: list[dict[str, Any]], source: dict[str, dict[str, Any]]) -> None:
    for row in rows:
        assert list(row) == KEYS
        original = source[row["prompt_id"]]
        assert row["prompt"] == original["prompt"]
        assert all(list(m) == ["role", "content"] for m in row["messages"])
        assert row["messages"] == [{"role": m["role"], "content": m["content"]} for m in original["messages"]]


# -- loading, splitting, writing ---------------------------------------------------------------


def test_hub_layout_slice_then_seeded_split(
    ultrachat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run("--dataset", ultrachat, "--split", "train_sft[:10%]", "--out-dir", out) == 0

    train, test = read_jsonl(out / "train_data.jsonl"), read_jsonl(out / "test_data.jsonl")
    assert (len(train), len(test)) == (40, 10)
    # The slice is the first 10 % of train_sft, in order: no test_sft rows, no junk from .cache/.
    first_50 = {conversation("train_sft", i)["prompt_id"] for i in range(50)}
    ids = [r["prompt_id"] for r in train + test]
    assert len(set(ids)) == 50 and set(ids) == first_50
    assert_shape(train + test, source_rows("train_sft", TRAIN_ROWS))
    # Non-ASCII is written as UTF-8, not \u escapes.
    assert "你好" in (out / "train_data.jsonl").read_text(encoding="utf-8")
    assert validate_file(out / "train_data.jsonl").ok
    assert validate_file(out / "test_data.jsonl", min_examples=1).ok

    printed = capsys.readouterr().out
    assert re.search(r"original:\s+50\b", printed)
    assert re.search(rf"train:\s+40 rows -> {re.escape(str(out / 'train_data.jsonl'))}", printed)
    assert re.search(rf"test:\s+10 rows -> {re.escape(str(out / 'test_data.jsonl'))}", printed)


def test_same_seed_same_files_other_seed_other_split(ultrachat: Path, tmp_path: Path) -> None:
    def split(seed: int, name: str) -> tuple[bytes, bytes]:
        out = tmp_path / name
        assert (
            run("--dataset", ultrachat, "--split", "train_sft[:10%]", "--seed", seed, "--out-dir", out) == 0
        )
        return (out / "train_data.jsonl").read_bytes(), (out / "test_data.jsonl").read_bytes()

    first, again, other = split(7, "a"), split(7, "b"), split(8, "c")
    assert first == again
    test_ids = {json.loads(line)["prompt_id"] for line in first[1].splitlines()}
    other_ids = {json.loads(line)["prompt_id"] for line in other[1].splitlines()}
    assert len(other_ids) == 10 and test_ids != other_ids


def test_split_name_picks_the_files(ultrachat: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        run("--dataset", ultrachat, "--split", "test_sft[:50%]", "--test-fraction", "0.1", "--out-dir", out)
        == 0
    )
    rows = read_jsonl(out / "train_data.jsonl") + read_jsonl(out / "test_data.jsonl")
    assert len(rows) == 50
    assert {r["prompt_id"] for r in rows} == {conversation("test_sft", i)["prompt_id"] for i in range(50)}
    assert len(read_jsonl(out / "test_data.jsonl")) == 5


def test_local_jsonl_file_takes_the_slice(chats_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # One file = one split: "train_sft" is ignored, the slice [:50%] applies -> 15 rows -> 12/3.
    code = run(
        "--dataset",
        chats_jsonl,
        "--split",
        "train_sft[:50%]",
        "--out-dir",
        out,
        "--train-name",
        "t.jsonl",
        "--test-name",
        "v.jsonl",
    )
    assert code == 0
    train, test = read_jsonl(out / "t.jsonl"), read_jsonl(out / "v.jsonl")
    assert (len(train), len(test)) == (12, 3)
    assert {r["prompt_id"] for r in train + test} == {
        conversation("jsonl", i)["prompt_id"] for i in range(15)
    }
    assert_shape(train + test, source_rows("jsonl", 30))
    assert validate_file(out / "t.jsonl").ok and validate_file(out / "v.jsonl", min_examples=1).ok


def test_missing_prompt_columns_are_filled_in(tmp_path: Path) -> None:
    src = tmp_path / "messages_only.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(10)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run("--dataset", src, "--split", "train", "--out-dir", tmp_path / "out") == 0
    for row in read_jsonl(tmp_path / "out" / "train_data.jsonl"):
        assert list(row) == KEYS
        assert row["prompt"] == row["messages"][0]["content"]
        assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode()).hexdigest()


def test_rows_the_pipeline_would_reject_are_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "mixed.jsonl"
    rows = [conversation("mixed", i) for i in range(20)]
    rows[3]["messages"] = rows[3]["messages"][:1]  # ends with the user
    rows[7]["messages"][1]["content"] = "   "  # empty answer
    rows[11]["messages"][1]["content"] = "x" * 400  # ~200 tokens > --max-tokens 100
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"

    assert run("--dataset", src, "--split", "train", "--max-tokens", "100", "--out-dir", out) == 0
    kept = read_jsonl(out / "train_data.jsonl") + read_jsonl(out / "test_data.jsonl")
    assert len(kept) == 17
    assert {rows[i]["prompt_id"] for i in (3, 7, 11)}.isdisjoint(r["prompt_id"] for r in kept)
    printed = capsys.readouterr().out
    assert "original: 20" in printed and re.search(r"dropped:\s+3 rows", printed)

    # --keep-invalid writes them all, and says the pipeline would reject the files (exit 1).
    keep = tmp_path / "keep"
    code = run(
        "--dataset", src, "--split", "train", "--max-tokens", "100", "--keep-invalid", "--out-dir", keep
    )
    assert code == 1
    assert len(read_jsonl(keep / "train_data.jsonl")) + len(read_jsonl(keep / "test_data.jsonl")) == 20
    assert "would reject" in capsys.readouterr().err


# -- errors: exit 2, one clear message, no traceback -------------------------------------------


def test_unreachable_hub_gives_the_two_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run("--dataset", "HuggingFaceH4/ultrachat_200k", "--out-dir", out) == 2
    err = capsys.readouterr().err
    assert "HuggingFaceH4/ultrachat_200k" in err and "huggingface.co" in err
    assert "HF_HUB_OFFLINE=1" in err and "--dataset /path/to/local/parquet-or-jsonl" in err
    assert "Traceback" not in err
    assert not list(out.glob("*.jsonl"))


class ConnectError(Exception):
    """Named like httpx's: not a ConnectionError subclass, recognised by name in the cause chain."""


def _offline_wrapper() -> Exception:
    try:
        raise FileNotFoundError("Dataset HuggingFaceH4/ultrachat_200k is not cached in None")
    except FileNotFoundError as inner:
        try:
            raise ConnectionError("Couldn't reach 'HuggingFaceH4/ultrachat_200k' on the Hub") from inner
        except ConnectionError as outer:
            return outer


def _transport_failure() -> Exception:
    try:
        raise ConnectError("[Errno -2] Name or service not known")
    except ConnectError as inner:
        try:
            raise RuntimeError("request failed") from inner
        except RuntimeError as outer:
            return outer


@pytest.mark.parametrize("failure", [_offline_wrapper, _transport_failure])
def test_hub_unreachable_while_online(
    failure: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Online mode, no network: the message names both fixes, starting with HF_HUB_OFFLINE=1."""
    import datasets
    import datasets.config

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise failure()

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    assert run("--out-dir", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "This machine could not reach huggingface.co" in err
    assert "set HF_HUB_OFFLINE=1 to use the cached copy" in err and "--dataset /path/to/local" in err
    assert "Traceback" not in err


def test_hub_dataset_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise DatasetNotFoundError(
            "Dataset 'someone/nothing' doesn't exist on the Hub or cannot be accessed."
        )

    monkeypatch.setattr(datasets, "load_dataset", missing)
    assert run("--dataset", "someone/nothing", "--out-dir", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "no such dataset, or it is gated" in err and "Traceback" not in err


def test_unreachable_hub_from_the_command_line(tmp_path: Path) -> None:
    """A fresh interpreter: the real CLI entry point, environment variables only, no patching."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(_hf_env(tmp_path / "fresh-hf-home"))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--split", "train_sft[:1%]"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "could not load 'HuggingFaceH4/ultrachat_200k'" in proc.stderr
    assert "HF_HUB_OFFLINE=1" in proc.stderr and "--dataset" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "train_data.jsonl").exists()


@pytest.mark.parametrize("fraction", ["0", "1", "1.5", "-0.2", "abc"])
def test_bad_fraction(
    fraction: str, ultrachat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--dataset", ultrachat, "--test-fraction", fraction, "--out-dir", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "--test-fraction" in err and ("outside (0, 1)" in err or "not a number" in err)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", ["nowhere/ultrachat/data", "missing.parquet", "./gone"])
def test_missing_local_path(missing: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / missing) if not missing.startswith("./") else missing
    assert run("--dataset", path, "--out-dir", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "local dataset not found" in err and "does not exist" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ("train_sft[:1%%]", "bad --split"),
        ("train_sft[:200%]", "bad --split"),
        ("train_sft[a:]", "bad --split"),
        ("train_sft[:1%](sideways)", "bad --split"),
        ("", "--split is empty"),
        ("train[:10%]", "no files for split 'train'"),
        ("train_sft[10:5]", "holds no rows"),
    ],
)
def test_bad_split(
    split: str, expected: str, ultrachat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--dataset", ultrachat, "--split", split, "--out-dir", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    if expected.startswith("no files"):
        assert "test_sft, train_sft" in err  # says which splits exist


def test_too_few_rows_to_split(chats_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--dataset", chats_jsonl, "--split", "train[:1]", "--out-dir", tmp_path / "out") == 2
    assert "at least 2" in capsys.readouterr().err


def test_help_explains_upload_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--help") == 0
    text = capsys.readouterr().out
    assert "--with-validation" in text and "_splits/manual/" in text and "HF_HUB_OFFLINE=1" in text


# -- upload ------------------------------------------------------------------------------------


def blobs(fixture: BlobStoreFixture) -> dict[str, bytes]:
    container = fixture.service.get_container_client(fixture.container)
    return {b.name: container.download_blob(b.name).readall() for b in container.list_blobs()}


def test_upload_sends_the_training_file_where_it_starts_a_run(
    ultrachat: Path,
    tmp_path: Path,
    azurite: Azurite,
    blob_store: BlobStoreFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    code = run(
        "--dataset",
        ultrachat,
        "--split",
        "train_sft[:10%]",
        "--out-dir",
        out,
        "--upload",
        "--container",
        blob_store.container,
        "--prefix",
        "support/",
        "--connection-string",
        azurite.connection_string,
    )
    assert code == 0
    stored = blobs(blob_store)
    assert stored == {"support/train_data.jsonl": (out / "train_data.jsonl").read_bytes()}
    assert is_dataset_blob("support/train_data.jsonl")

    printed = capsys.readouterr().out
    props = blob_store.service.get_blob_client(
        blob_store.container, "support/train_data.jsonl"
    ).get_blob_properties()
    assert f"{blob_store.container}/support/train_data.jsonl  etag {props.etag}" in printed
    assert "starts a fine-tuning run" in printed and "--with-validation" in printed
    assert azurite.account_key not in printed


def test_upload_with_validation_goes_where_the_trigger_does_not_look(
    ultrachat: Path,
    tmp_path: Path,
    azurite: Azurite,
    blob_store: BlobStoreFixture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DatasetsStorage", azurite.connection_string)  # the app setting, no flag
    out = tmp_path / "out"
    code = run(
        "--dataset",
        ultrachat,
        "--split",
        "train_sft[:10%]",
        "--out-dir",
        out,
        "--with-validation",
        "--container",
        blob_store.container,
        "--prefix",
        "support/",
    )
    assert code == 0
    train_blob, test_blob = (
        "support/_splits/manual/train_data.jsonl",
        "support/_splits/manual/test_data.jsonl",
    )
    assert blobs(blob_store) == {
        train_blob: (out / "train_data.jsonl").read_bytes(),
        test_blob: (out / "test_data.jsonl").read_bytes(),
    }
    assert not is_dataset_blob(train_blob) and not is_dataset_blob(test_blob)

    printed = capsys.readouterr().out
    assert "No run started" in printed and "/api/runs" in printed
    body = json.loads(re.search(r"-d '(\{.*?\})'", printed)[1])  # type: ignore[index]
    assert body == {
        "dataset": f"{blob_store.container}/{train_blob}",
        "validation": f"{blob_store.container}/{test_blob}",
    }
    for name in (train_blob, test_blob):
        etag = blob_store.service.get_blob_client(blob_store.container, name).get_blob_properties().etag
        assert f"{blob_store.container}/{name}  etag {etag}" in printed


def test_upload_to_a_missing_container_keeps_the_files(
    chats_jsonl: Path,
    tmp_path: Path,
    azurite: Azurite,
    blob_store: BlobStoreFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    code = run(
        "--dataset",
        chats_jsonl,
        "--split",
        "train",
        "--out-dir",
        out,
        "--upload",
        "--container",
        "no-such-container",
        "--connection-string",
        azurite.connection_string,
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "container 'no-such-container' not found" in captured.err and "Traceback" not in captured.err
    assert azurite.account_key not in captured.out + captured.err
    assert (out / "train_data.jsonl").is_file() and (out / "test_data.jsonl").is_file()


def test_account_url_uses_default_azure_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    made: list[dict[str, Any]] = []

    class Credential:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise AssertionError("no request is made here")

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Credential)
    monkeypatch.setenv("DatasetsStorage__clientId", "00000000-0000-0000-0000-000000000001")
    args = dd.build_parser().parse_args(["--account-url", "https://acct.blob.core.windows.net"])
    store, how = dd._store(args)
    with store:
        assert store.service.url.startswith("https://acct.blob.core.windows.net")
    assert made == [{"managed_identity_client_id": "00000000-0000-0000-0000-000000000001"}]
    assert "DefaultAzureCredential" in how


@pytest.mark.parametrize(
    ("prefix", "with_validation", "expected"),
    [
        ("", False, ("train_data.jsonl", None)),
        ("support/", False, ("support/train_data.jsonl", None)),
        ("", True, ("_splits/manual/train_data.jsonl", "_splits/manual/test_data.jsonl")),
        ("a/b/", True, ("a/b/_splits/manual/train_data.jsonl", "a/b/_splits/manual/test_data.jsonl")),
        ("run1-", True, ("_splits/manual/run1-train_data.jsonl", "_splits/manual/run1-test_data.jsonl")),
    ],
)
def test_blob_names(prefix: str, with_validation: bool, expected: tuple[str, str | None]) -> None:
    names = dd.blob_names(prefix, "train_data.jsonl", "test_data.jsonl", with_validation)
    assert names == expected
    # Only the default mode's training blob is one the trigger starts a run for.
    for name in names:
        if name is not None:
            assert is_dataset_blob(name) is not with_validation
