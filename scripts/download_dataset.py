"""Prepare the fine-tuning data (the tutorial's data step) and optionally upload it to start a run.

What it does, as in the tutorial: load ``HuggingFaceH4/ultrachat_200k`` (config ``default``,
split ``train_sft[:1%]``) with ``datasets.load_dataset``, split it 80/20 with
``train_test_split`` and write ``data/train_data.jsonl`` and ``data/test_data.jsonl``, one
``{"prompt", "prompt_id", "messages": [{"role", "content"}, ...]}`` object per line (UTF-8,
non-ASCII written as is, ``\\n`` line endings).

What it adds:

* ``--dataset`` may be a local file or directory (parquet, JSONL or JSON shaped like
  ultrachat_200k), so it works without the hub. A directory laid out like the hub repo
  (``data/train_sft-00000-of-00003.parquet``, ``data/test_sft-...``) is read split by split: the
  split name in ``--split`` picks the files, then the slice applies (``train_sft[:1%]``). A
  directory without split names in its file names, or a single file, is one split: the name in
  ``--split`` is ignored and only the slice applies (``train_sft[:10%]`` = the first 10 %).
  ``--config`` only applies to hub datasets.
* The split is seeded (``--seed``): same input and seed, same files.
* Conversations the pipeline would reject are dropped before the split, and counted: the
  pipeline checks every line of an uploaded dataset (``core.validation``: roles, non-empty
  content, ends with the assistant, at most ``MAX_TOKENS`` estimated tokens) and refuses the
  whole file if one line fails. Long ultrachat conversations exceed the default 4096, so without
  this the tutorial's 1 % would end as ``invalid_dataset``. ``--max-tokens`` should match the
  app's ``MAX_TOKENS``; ``--keep-invalid`` writes every row anyway. Missing ``prompt`` /
  ``prompt_id`` columns are filled in (first user message / its SHA-256); ``messages`` is required.
* ``--upload`` sends the result to the datasets container (see below).

Upload behaviour, and why
-------------------------
In this app, a ``*.jsonl`` landing in the datasets container starts a fine-tuning run (unless it
sits under a ``_splits/`` or ``reports/`` folder), and a run without a validation file holds out
``VALIDATION_FRACTION`` (20 %) of its dataset itself. Uploading both files side by side would
start *two* runs, the second one fine-tuning on the test split. So there are two clear modes:

``--upload`` (default mode, one command, one run)
    Uploads the training file only, as ``<prefix><train-name>`` (``datasets/train_data.jsonl``).
    That upload starts exactly one run, which makes its own 80/20 split of it for validation.
    The test file stays local: it is your held-out set, never seen by the run.

``--upload --with-validation`` (the tutorial's pairing: train file + test file as validation)
    Uploads both files where the trigger does not look, ``<prefix dir>/_splits/manual/<name>``,
    so nothing starts, and prints the ``POST /api/runs`` request (``dataset`` + ``validation``)
    that starts one run using the test file as the validation set. ``_splits/`` is the folder the
    pipeline already keeps split files in; its own runs write to ``_splits/ft-<id>/``, never to
    ``manual/``. ``--with-validation`` implies ``--upload``.

Either way the script checks the final blob names with the app's own rule
(``core.naming.is_dataset_blob``) and says truthfully whether the upload starts a run.

Storage connection, first match wins: ``--connection-string``; ``--account-url`` with
``DefaultAzureCredential`` (identity-based, like the app in Azure; ``az login`` locally); the
app settings ``DatasetsStorage`` (connection string) or ``DatasetsStorage__blobServiceUri`` /
``DatasetsStorage__accountName`` (+ ``DatasetsStorage__clientId``). Nothing printed contains a
key or a SAS token.

Usage::

    python scripts/download_dataset.py                                    # hub, as in the tutorial
    HF_HUB_OFFLINE=1 python scripts/download_dataset.py                   # from the local HF cache
    python scripts/download_dataset.py --dataset ~/ultrachat_200k --split "train_sft[:5%]"
    python scripts/download_dataset.py --upload --account-url https://<acct>.blob.core.windows.net
    python scripts/download_dataset.py --with-validation --connection-string "UseDevelopmentStorage=true"

Exit codes: 0 done; 1 files written but not usable as they are (validation failed, upload
failed); 2 nothing written: bad arguments or the dataset could not be loaded (hub unreachable and
not cached, missing local path, bad split expression...). Errors are one clear message on
stderr, no traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import re
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python scripts/download_dataset.py` puts scripts/ first, not the root
    sys.path.insert(0, str(ROOT))

from core.cli import positive_int  # noqa: E402
from core.naming import SPLITS_DIR, is_dataset_blob  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.validation import validate_file  # noqa: E402

if TYPE_CHECKING:
    from datasets import Dataset

    from core.models import BlobRef, ValidationReport
    from storage.blob_store import BlobDatasetStore

DEFAULT_DATASET = "HuggingFaceH4/ultrachat_200k"
DEFAULT_CONFIG = "default"
DEFAULT_SPLIT = "train_sft[:1%]"
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 42
MANUAL_DIR = "manual"  # --with-validation uploads go to <prefix dir>/_splits/manual/
LOCAL_SPLIT = "train"  # the split name of a single local file / a directory without split names
CONNECTION = "DatasetsStorage"  # the app settings prefix the blob trigger's `connection` names
COLUMNS = ("prompt", "prompt_id", "messages")
FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}

_SETTINGS_DEFAULTS = Settings.model_fields
DEFAULT_MAX_TOKENS: int = _SETTINGS_DEFAULTS["MAX_TOKENS"].default
DEFAULT_CONTAINER: str = (
    os.environ.get("DATASETS_CONTAINER") or _SETTINGS_DEFAULTS["DATASETS_CONTAINER"].default
)

# `<split>-00000-of-00003.parquet` (optionally `-<hash>`): the hub's shard naming.
_SHARD = re.compile(r"^(?P<split>\w+?(?:\.\w+)*)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?$")
# File stems that name a split on their own (`train.jsonl`, `test_sft.parquet`, `validation.json`).
_SPLIT_WORD = re.compile(r"^(train|test|valid|validation|dev|eval)(_\w+)?$")
_SPLIT_NAME = re.compile(r"^(?P<name>\w+(?:\.\w+)*)(?P<rest>.*)$")
_ADDITION = re.compile(r"\s*\+\s*")

# Exception class names (anywhere in the cause chain) that mean "could not reach the hub".
_UNREACHABLE = frozenset(
    {
        "OfflineModeIsEnabled",
        "LocalEntryNotFoundError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "TimeoutException",
        "TransportError",
        "ProxyError",
    }
)


class UsageError(Exception):
    """The dataset could not be produced for a reason the user can fix: message, exit 2."""


class UploadFailed(Exception):
    """The files are written but could not be uploaded: message, exit 1."""


# -- arguments ---------------------------------------------------------------------------------


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"{text} is outside (0, 1): give the test share as a fraction, e.g. 0.2 for 20 %"
        )
    return value


def _file_name(text: str) -> str:
    if not text or "/" in text or "\\" in text or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain file name")
    return text


_HELP_DESCRIPTION = """\
Load a chat dataset (default: the tutorial's 1 % of HuggingFaceH4/ultrachat_200k), drop the
conversations the pipeline would reject, split it train/test with a seed and write two JSONL
files; optionally upload them to the datasets container."""

_HELP_EPILOG = """\
upload modes:
  --upload                    uploads ONLY the training file, as <prefix><train-name>. That
                              upload starts one fine-tuning run, which holds out 20 % of it for
                              validation itself; the test file stays local, unseen by the run.
  --upload --with-validation  uploads both files to <prefix dir>/_splits/manual/, where the blob
                              trigger does not look (no run starts), and prints the
                              POST /api/runs request that starts one run with the test file as
                              its validation set.
  The two files are never uploaded side by side where the trigger looks: that would start a
  second run, fine-tuned on the test split.

offline (no access to huggingface.co):
  HF_HUB_OFFLINE=1 ...        use the copy in the local Hugging Face cache (HF_HOME)
  --dataset PATH              a local parquet/JSONL/JSON file, or a directory laid out like the
                              hub repo (data/train_sft-00000-of-00001.parquet, data/test_sft-...)

exit codes:
  0 done; 1 files written but invalid or not uploaded; 2 nothing written (bad arguments, dataset
  not loadable)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="download_dataset.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_HELP_DESCRIPTION,
        epilog=_HELP_EPILOG,
    )
    src = parser.add_argument_group("source")
    src.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help="hub dataset id, or a local parquet/JSONL/JSON file or directory (default: %(default)s)",
    )
    src.add_argument(
        "--config", default=DEFAULT_CONFIG, help="hub dataset configuration (default: %(default)s)"
    )
    src.add_argument(
        "--split",
        default=DEFAULT_SPLIT,
        help="split and slice, datasets syntax: train_sft[:1%%], train_sft[:500], train_sft[10%%:20%%] "
        "(default: %(default)s). A single local file, or a directory without split names, is one "
        "split: only the slice applies.",
    )
    src.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="datasets cache directory (default: HF_DATASETS_CACHE, i.e. $HF_HOME/datasets)",
    )

    prep = parser.add_argument_group("split and output")
    prep.add_argument(
        "--test-fraction",
        type=_fraction,
        default=DEFAULT_TEST_FRACTION,
        help="share of rows in the test file, in (0, 1) (default: %(default)s)",
    )
    prep.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="shuffle seed of the split (default: %(default)s)"
    )
    prep.add_argument(
        "--max-tokens",
        type=positive_int,
        default=DEFAULT_MAX_TOKENS,
        help="drop conversations over this many estimated tokens; keep it equal to the app's MAX_TOKENS "
        "(default: %(default)s)",
    )
    prep.add_argument(
        "--keep-invalid",
        action="store_true",
        help="write conversations the pipeline would reject instead of dropping them (an upload is "
        "then refused)",
    )
    prep.add_argument("--out-dir", type=Path, default=Path("data"), help="output directory (default: data)")
    prep.add_argument(
        "--train-name", type=_file_name, default="train_data.jsonl", help="(default: %(default)s)"
    )
    prep.add_argument(
        "--test-name", type=_file_name, default="test_data.jsonl", help="(default: %(default)s)"
    )

    up = parser.add_argument_group("upload")
    up.add_argument(
        "--upload",
        action="store_true",
        help="upload the training file as <prefix><train-name>; this starts a fine-tuning run",
    )
    up.add_argument(
        "--with-validation",
        action="store_true",
        help="upload both files to <prefix dir>/_splits/manual/ (no run starts) and print the POST "
        "/api/runs body using the test file as validation; implies --upload",
    )
    up.add_argument(
        "--container",
        default=DEFAULT_CONTAINER,
        help="datasets container (default: DATASETS_CONTAINER or %(default)s)",
    )
    up.add_argument(
        "--prefix",
        default="",
        help='prepended verbatim to the blob names, e.g. "support/" (default: none)',
    )
    conn = up.add_mutually_exclusive_group()
    conn.add_argument(
        "--connection-string",
        help="storage connection string (default: the DatasetsStorage setting); never printed",
    )
    conn.add_argument(
        "--account-url",
        help="https://<account>.blob.core.windows.net, signed in with DefaultAzureCredential "
        "(default: DatasetsStorage__blobServiceUri / DatasetsStorage__accountName)",
    )
    return parser


# -- where the data comes from -----------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """What to hand to `load_dataset`."""

    kind: Literal["hub", "local"]
    path: str  # hub id, or the local file/directory as given
    split: str  # the split expression load_dataset gets (names rewritten for local data)
    builder: str | None = None  # "parquet" / "json" for local data
    data_files: dict[str, list[str]] | None = None

    def describe(self, config: str) -> str:
        if self.kind == "hub":
            return f"{self.path!r} (config {config!r}, split {self.split!r}) from the Hugging Face hub"
        return f"local {self.builder} data {self.path!r} (split {self.split!r})"


def parse_split(spec: str) -> list[tuple[str, str]]:
    """`[(split name, rest)]` for each `+`-joined part of a datasets split expression.

    Raises UsageError naming the problem (syntax, percent bounds, rounding) and the valid forms.
    """
    from datasets import ReadInstruction

    hint = "expected e.g. train_sft, train_sft[:1%], train_sft[:500], train_sft[10%:20%] or train+test"
    text = spec.strip()
    if not text:
        raise UsageError(f"--split is empty; {hint}")
    try:
        ReadInstruction.from_spec(text)
    except (ValueError, AssertionError) as exc:
        raise UsageError(f"bad --split {spec!r}: {exc}; {hint}") from None
    parts = []
    for part in _ADDITION.split(text):
        match = _SPLIT_NAME.match(part)
        if match is None:  # from_spec accepted it, so this does not happen; keep the message anyway
            raise UsageError(f"bad --split {spec!r}: cannot read the split name in {part!r}; {hint}")
        parts.append((match["name"], match["rest"]))
    return parts


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", ".", "~"))
        or "\\" in text
        or text.count("/") > 1
        or any(text.lower().endswith(s) for s in FORMATS)
    )


def _split_label(path: Path) -> tuple[str, bool]:
    """(split name the file's name carries, whether it really names a split)."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    shard = _SHARD.match(stem)
    if shard:
        return shard["split"], True
    return stem, bool(_SPLIT_WORD.match(stem))


def _data_files(directory: Path) -> list[Path]:
    """Data files under `directory`, sorted; hidden folders (.git, `hf download`'s .cache/) skipped."""
    found = []
    for folder, subdirs, names in os.walk(directory):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found += [
            Path(folder, n) for n in names if not n.startswith(".") and Path(n).suffix.lower() in FORMATS
        ]
    return sorted(found)


def resolve_source(dataset: str, split: str) -> Source:
    parts = parse_split(split)
    local = Path(dataset).expanduser()
    if not local.exists():
        if _looks_like_path(dataset):
            raise UsageError(
                f"local dataset not found: {dataset!r} does not exist (resolved: {local.absolute()}). "
                "Pass an existing parquet/JSONL/JSON file or a directory holding them, or a hub id "
                f"such as {DEFAULT_DATASET}."
            )
        return Source(kind="hub", path=dataset, split=split.strip())

    if local.is_file():
        builder = FORMATS.get(local.suffix.lower())
        if builder is None:
            raise UsageError(
                f"{dataset!r} is not a parquet, JSONL or JSON file (suffix {local.suffix or 'none'!r})"
            )
        return Source(
            kind="local",
            path=dataset,
            split=_rename(parts, LOCAL_SPLIT),
            builder=builder,
            data_files={LOCAL_SPLIT: [str(local)]},
        )

    files = _data_files(local)
    if not files:
        raise UsageError(f"no .parquet, .jsonl or .json files found under {dataset!r}")
    builders = {FORMATS[f.suffix.lower()] for f in files}
    if len(builders) > 1:
        raise UsageError(
            f"{dataset!r} mixes parquet and JSON files; point --dataset at one file or at a "
            "directory holding one format"
        )
    builder = builders.pop()
    by_split: dict[str, list[str]] = {}
    names_splits = False
    for f in files:
        label, is_split = _split_label(f)
        by_split.setdefault(label, []).append(str(f))
        names_splits = names_splits or is_split
    wanted = list(dict.fromkeys(name for name, _ in parts))
    if all(name in by_split for name in wanted):
        return Source(
            kind="local",
            path=dataset,
            split=split.strip(),
            builder=builder,
            data_files={name: by_split[name] for name in wanted},
        )
    if names_splits:
        missing = [n for n in wanted if n not in by_split]
        available = ", ".join(sorted(by_split))
        example = sorted(by_split)[0]
        raise UsageError(
            f"no files for split {missing[0]!r} in {dataset!r}: its file names give the splits "
            f'{available}. Pick one, e.g. --split "{example}{parts[0][1]}"'
        )
    return Source(
        kind="local",
        path=dataset,
        split=_rename(parts, LOCAL_SPLIT),
        builder=builder,
        data_files={LOCAL_SPLIT: [str(f) for f in files]},
    )


def _rename(parts: list[tuple[str, str]], name: str) -> str:
    if len(parts) > 1:
        raise UsageError(
            "a single local file, or a directory without split names in its file names, has one "
            f'split: give one slice, e.g. --split "{name}{parts[0][1] or "[:10%]"}"'
        )
    return f"{name}{parts[0][1]}"


# -- loading -----------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _unreachable(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, ConnectionError | TimeoutError | socket.gaierror):
            return True
        if any(cls.__name__ in _UNREACHABLE for cls in type(e).__mro__):
            return True
    return False


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _hub_unreachable_message(source: Source, config: str, cache_dir: Path | None, exc: BaseException) -> str:
    from datasets import config as ds_config

    cache = cache_dir or ds_config.HF_DATASETS_CACHE
    offline = bool(ds_config.HF_HUB_OFFLINE)
    if offline:
        why = (
            "This machine could not reach huggingface.co: offline mode is on (HF_HUB_OFFLINE=1), so no "
            f"request was made, and no cached copy of this dataset was found in {cache}."
        )
        fix_cache = (
            "use a cached copy: HF_HUB_OFFLINE=1 only works where the dataset was downloaded before; "
            "run this script once on a machine that can reach huggingface.co (same HF_HOME), or copy "
            "that cache here, then rerun with HF_HUB_OFFLINE=1"
        )
    else:
        why = f"This machine could not reach huggingface.co, and no cached copy was found in {cache}."
        fix_cache = (
            "if the dataset was downloaded here before, set HF_HUB_OFFLINE=1 to use the cached copy "
            "(HF_HOME / --cache-dir pointing at that cache)"
        )
    return (
        f"could not load {source.describe(config)}.\n"
        f"{why}\n"
        "Fix it one of two ways:\n"
        f"  1. {fix_cache};\n"
        "  2. pass --dataset /path/to/local/parquet-or-jsonl: a file, or a directory laid out like the "
        "hub repo (data/train_sft-00000-of-00001.parquet), e.g. a copy made with "
        f"`hf download {DEFAULT_DATASET} --repo-type dataset --local-dir ultrachat_200k`.\n"
        f"(cause: {_cause(exc)})"
    )


def load(source: Source, config: str, cache_dir: Path | None) -> Dataset:
    """`load_dataset` for the source, with every expected failure turned into a UsageError."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetNotFoundError, DatasetsError

    cache = str(cache_dir) if cache_dir else None
    try:
        if source.kind == "hub":
            dataset = load_dataset(source.path, config, split=source.split, cache_dir=cache)
        else:
            dataset = load_dataset(
                source.builder or "json", data_files=source.data_files, split=source.split, cache_dir=cache
            )
    except Exception as exc:
        failure: UsageError
        if source.kind == "hub" and _unreachable(exc):
            failure = UsageError(_hub_unreachable_message(source, config, cache_dir, exc))
        elif source.kind == "hub" and isinstance(exc, DatasetNotFoundError):
            failure = UsageError(
                f"could not load {source.describe(config)}: the hub has no such dataset, or it is gated "
                "and this machine is not signed in (`hf auth login`, or HF_TOKEN). Check --dataset, or "
                f"pass a local path.\n(cause: {_cause(exc)})"
            )
        elif isinstance(exc, ValueError) and (
            "split" in str(exc).lower() or "instruction" in str(exc).lower()
        ):
            failure = UsageError(f"bad --split for {source.describe(config)}: {_cause(exc)}")
        elif source.kind == "hub" and isinstance(exc, ValueError | DatasetsError | OSError):
            failure = UsageError(f"could not load {source.describe(config)}: {_cause(exc)}")
        elif source.kind == "local" and isinstance(exc, ValueError | DatasetsError | OSError):
            failure = UsageError(
                f"could not read {source.describe(config)}: {_cause(exc)}. Local files must be parquet, "
                "JSONL or JSON with a 'messages' column (ultrachat_200k shape)."
            )
        else:
            raise
        raise failure from None
    return dataset  # type: ignore[return-value]


# -- rows --------------------------------------------------------------------------------------


def to_record(row: dict[str, Any]) -> dict[str, Any]:
    """One output line: exactly prompt, prompt_id, messages[{role, content}], in that order."""
    raw = row.get("messages")
    messages = (
        [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m for m in raw]
        if isinstance(raw, list)
        else raw
    )
    prompt = row.get("prompt")
    if prompt is None and isinstance(messages, list):
        prompt = next(
            (m["content"] for m in messages if isinstance(m, dict) and m.get("role") == "user"), None
        )
    prompt_id = row.get("prompt_id")
    if prompt_id is None and isinstance(prompt, str):
        prompt_id = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()
    return {"prompt": prompt, "prompt_id": prompt_id, "messages": messages}


def _line(record: dict[str, Any]) -> bytes:
    try:
        return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate: escape it (valid UTF-8; the validator flags it)
        return json.dumps(record, ensure_ascii=True).encode("ascii") + b"\n"


def _rows(dataset: Dataset) -> Iterator[dict[str, Any]]:
    columns = [c for c in COLUMNS if c in dataset.column_names]
    for row in dataset.select_columns(columns):
        yield to_record(row)


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Write atomically (temp file + rename): a failed run never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for record in records:
                out.write(_line(record))
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _reason(message: str) -> str:
    return re.sub(r"\d+", "N", message)


def drop_invalid(dataset: Dataset, work_dir: Path, max_tokens: int) -> tuple[Dataset, Counter[str]]:
    """Rows the pipeline's validator accepts, and why the others were dropped (one reason each)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=work_dir, prefix=".all.", suffix=".jsonl.tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write_jsonl(_rows(dataset), tmp)
        report = validate_file(tmp, max_tokens=max_tokens, max_errors=sys.maxsize, min_examples=1)
    finally:
        tmp.unlink(missing_ok=True)
    first: dict[int, str] = {}
    for issue in report.errors:
        if issue.line > 0:
            first.setdefault(issue.line, f"{issue.field or 'line'}: {_reason(issue.message)}")
    if not first:
        return dataset, Counter()
    keep = [i for i in range(len(dataset)) if i + 1 not in first]
    return dataset.select(keep), Counter(first.values())


# -- upload ------------------------------------------------------------------------------------


def _setting(suffix: str) -> str | None:
    """The app setting `DatasetsStorage<suffix>` from the environment (empty counts as unset)."""
    return os.environ.get(CONNECTION + suffix) or None


def _store(args: argparse.Namespace) -> tuple[BlobDatasetStore, str]:
    """The store and a description of how it connects (never the secret itself)."""
    from azure.identity import DefaultAzureCredential

    from storage.blob_store import BlobDatasetStore

    def identity(url: str, where: str) -> tuple[BlobDatasetStore, str]:
        options: dict[str, str] = {}
        client_id = _setting("__clientId")
        if client_id:
            options["managed_identity_client_id"] = client_id
        store = BlobDatasetStore.from_account_url(url, DefaultAzureCredential(**options))
        return store, f"{url} with DefaultAzureCredential ({where})"

    def connection(text: str, where: str) -> tuple[BlobDatasetStore, str]:
        try:
            return BlobDatasetStore.from_connection_string(text), f"connection string from {where}"
        except ValueError:
            raise UploadFailed(
                f"the connection string from {where} is not a valid storage connection string"
            ) from None

    if args.connection_string:
        return connection(args.connection_string, "--connection-string")
    if args.account_url:
        return identity(args.account_url, "--account-url")
    if text := _setting(""):
        return connection(text, CONNECTION)
    if url := _setting("__blobServiceUri"):
        return identity(url, f"{CONNECTION}__blobServiceUri")
    if account := _setting("__accountName"):
        return identity(f"https://{account}.blob.core.windows.net", f"{CONNECTION}__accountName")
    raise UploadFailed(
        "no storage to upload to: pass --connection-string or --account-url "
        "https://<account>.blob.core.windows.net (or set DatasetsStorage / DatasetsStorage__blobServiceUri)"
    )


def blob_names(prefix: str, train_name: str, test_name: str, with_validation: bool) -> tuple[str, str | None]:
    """(train blob, test blob or None) for the upload mode (see the module docstring)."""
    if not with_validation:
        return f"{prefix}{train_name}", None
    folder, _, stem = prefix.rpartition("/")
    base = (
        posixpath.join(folder, SPLITS_DIR, MANUAL_DIR) if folder else posixpath.join(SPLITS_DIR, MANUAL_DIR)
    )
    return f"{base}/{stem}{train_name}", f"{base}/{stem}{test_name}"


def _post_hint(dataset: str, validation: str | None) -> str:
    body: dict[str, str] = {"dataset": dataset}
    if validation:
        body["validation"] = validation
    text = json.dumps(body)
    return (
        f'  curl -s -X POST "https://<app>.azurewebsites.net/api/runs?code=<function key>" \\\n'
        f"       -H 'Content-Type: application/json' -d '{text}'\n"
        "  (offline dev host: http://localhost:7071/api/runs)"
    )


def upload(args: argparse.Namespace, train_path: Path, test_path: Path) -> None:
    from backends.base import BlobStoreError
    from core.models import BlobRef

    train_blob, test_blob = blob_names(args.prefix, args.train_name, args.test_name, args.with_validation)
    plan = [(train_path, train_blob)] + ([(test_path, test_blob)] if test_blob else [])
    store, how = _store(args)
    done: list[BlobRef] = []
    with store:
        print(f"uploading to container {args.container!r} ({how})")
        for path, name in plan:
            try:
                ref = store.upload(path, BlobRef(container=args.container, name=name))
            except FileNotFoundError:
                raise UploadFailed(
                    f"upload of {path} failed: container {args.container!r} not found (create it, or pass "
                    "--container)"
                ) from None
            except BlobStoreError as exc:
                raise UploadFailed(f"upload of {path} failed: {exc}") from None
            done.append(ref)
            print(f"  {path} -> {ref.path}  etag {ref.etag}")

    train_ref = done[0]
    if test_blob is None:
        if is_dataset_blob(train_ref.name):
            print(
                f"This upload starts a fine-tuning run on {train_ref.path} (the blob trigger watches "
                f"{args.container}/*.jsonl); the run holds out VALIDATION_FRACTION (20 % by default) of it "
                "for validation."
            )
            print(
                f"{test_path} was not uploaded: it stays your held-out test set (uploaded next to the "
                "training file it would start a second run, trained on it). To use it as the run's "
                "validation set instead, rerun with --with-validation."
            )
        else:
            print(
                f"{train_ref.path} is not where the blob trigger looks (*.jsonl outside _splits/ and "
                "reports/): no run started. Start one with:"
            )
            print(_post_hint(train_ref.path, None))
    else:
        test_ref = done[1]
        print(
            f"No run started: {SPLITS_DIR}/ is not watched by the blob trigger. Start one run, fine-tuned "
            f"on {train_ref.path} and validated on {test_ref.path}, with:"
        )
        print(_post_hint(train_ref.path, test_ref.path))


# -- main --------------------------------------------------------------------------------------


def _report_line(report: ValidationReport) -> str:
    if report.ok:
        return f"valid ({report.examples} examples, max ~{report.tokens.max} tokens)"
    first = report.errors[0] if report.errors else None
    where = f"; first: line {first.line} {first.field}: {first.message}" if first else ""
    return f"INVALID: {report.error_count} error(s){where}"


def run(args: argparse.Namespace) -> int:
    if args.with_validation:
        args.upload = True
    train_path = args.out_dir / args.train_name
    test_path = args.out_dir / args.test_name
    if args.train_name == args.test_name:
        raise UsageError("--train-name and --test-name must differ")
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output directory {args.out_dir}: {_cause(exc)}") from None
    source = resolve_source(args.dataset, args.split)
    print(f"loading {source.describe(args.config)}")
    dataset = load(source, args.config, args.cache_dir)
    original = len(dataset)
    if "messages" not in dataset.column_names:
        raise UsageError(
            f"{args.dataset!r} has no 'messages' column (columns: {', '.join(dataset.column_names)}); "
            "expected the ultrachat_200k shape: prompt, prompt_id, messages[{role, content}]"
        )
    if original == 0:
        raise UsageError(f"split {source.split!r} of {args.dataset!r} holds no rows: widen --split")

    dropped: Counter[str] = Counter()
    kept = dataset
    if not args.keep_invalid:
        kept, dropped = drop_invalid(dataset, args.out_dir, args.max_tokens)
    if len(kept) < 2:
        raise UsageError(
            f"only {len(kept)} of {original} rows are usable; a train/test split needs at least 2: widen "
            "--split" + ("" if args.keep_invalid else f" or raise --max-tokens (now {args.max_tokens})")
        )
    try:
        parts = kept.train_test_split(test_size=args.test_fraction, seed=args.seed)
    except ValueError as exc:
        raise UsageError(
            f"cannot split {len(kept)} rows with --test-fraction {args.test_fraction}: {exc}"
        ) from None

    n_train = write_jsonl(_rows(parts["train"]), train_path)
    n_test = write_jsonl(_rows(parts["test"]), test_path)

    print(f"original: {original} rows")
    if dropped:
        print(
            f"dropped:  {sum(dropped.values())} rows the pipeline would reject (--keep-invalid keeps them):"
        )
        for reason, count in dropped.most_common(5):
            print(f"  {count:6d}  {reason}")
    print(f"train:    {n_train} rows -> {train_path}")
    print(f"test:     {n_test} rows -> {test_path}")

    reports = [
        validate_file(train_path, max_tokens=args.max_tokens),
        validate_file(test_path, max_tokens=args.max_tokens, min_examples=1),
    ]
    for path, report in zip((train_path, test_path), reports, strict=True):
        print(f"check {path.name}: {_report_line(report)}")
    if not all(r.ok for r in reports):
        print(
            "error: the pipeline would reject these files (status invalid_dataset)"
            + ("; not uploading" if args.upload else ""),
            file=sys.stderr,
        )
        return 1

    if args.upload:
        upload(args, train_path, test_path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # bad arguments (usage + message on stderr: 2) or --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UploadFailed as exc:
        print(f"error: {exc}\nThe local files are written; rerun with --upload to retry.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
