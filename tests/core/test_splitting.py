"""core.splitting: exact counts, determinism, every line exactly once, normalisation."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from core.splitting import SplitAborted, split_file, split_lines, split_streaming, validation_count
from core.validation import validate_file


def example(i: int) -> bytes:
    record = {
        "prompt_id": f"id-{i}",
        "messages": [{"role": "user", "content": f"q{i} — é"}, {"role": "assistant", "content": f"a{i}"}],
    }
    return json.dumps(record, ensure_ascii=False).encode()


def make(tmp_path: Path, n: int, *, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join(example(i) + b"\n" for i in range(n)))
    return path


def split(
    tmp_path: Path, src: Path, *, fraction: float = 0.2, seed: int = 42
) -> tuple[tuple[int, int], bytes, bytes]:
    train, val = tmp_path / "train.jsonl", tmp_path / "validation.jsonl"
    counts = split_file(src, train, val, fraction=fraction, seed=seed)
    return counts, train.read_bytes(), val.read_bytes()


def digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [
        (10, 0.2, (8, 2)),
        (3, 0.2, (2, 1)),  # round(0.6) = 1
        (2, 0.2, (1, 1)),  # round(0.4) = 0, clamped up to 1
        (2, 0.9, (1, 1)),  # round(1.8) = 2, clamped down to n - 1
        (100, 0.2, (80, 20)),
        (7, 0.5, (3, 4)),  # round(3.5) = 4
        (5, 0.5, (3, 2)),  # round(2.5) = 2 (banker's rounding, as round() does)
        (1000, 0.999, (1, 999)),
    ],
)
def test_exact_counts(tmp_path: Path, n: int, fraction: float, expected: tuple[int, int]) -> None:
    counts, train, val = split(tmp_path, make(tmp_path, n), fraction=fraction)
    assert counts == expected
    assert (train.count(b"\n"), val.count(b"\n")) == expected


def test_validation_count_rules() -> None:
    assert validation_count(10, 0.2) == 2
    assert validation_count(2, 0.01) == 1
    assert validation_count(2, 0.99) == 1
    with pytest.raises(ValueError, match="at least 2"):
        validation_count(1, 0.2)


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_examples_raise(tmp_path: Path, n: int) -> None:
    src = make(tmp_path, n)
    src.write_bytes(src.read_bytes() + b"\n  \n")  # blank lines are not examples
    with pytest.raises(ValueError, match="at least 2"):
        split(tmp_path, src)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_must_be_inside_0_1(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        split(tmp_path, make(tmp_path, 10), fraction=fraction)


def test_same_file_and_seed_give_identical_outputs(tmp_path: Path) -> None:
    src = make(tmp_path, 500)
    first = split(tmp_path, src, seed=7)
    second = split(tmp_path, src, seed=7)
    assert digest(first[1], first[2]) == digest(second[1], second[2])
    assert first[0] == second[0] == (400, 100)


def test_different_seed_selects_differently(tmp_path: Path) -> None:
    src = make(tmp_path, 500)
    _, _, val_a = split(tmp_path, src, seed=1)
    _, _, val_b = split(tmp_path, src, seed=2)
    assert val_a != val_b
    assert val_a.count(b"\n") == val_b.count(b"\n") == 100


def test_selection_is_the_documented_sample(tmp_path: Path) -> None:
    n, seed = 50, 42
    _, _, val = split(tmp_path, make(tmp_path, n), seed=seed)
    chosen = sorted(random.Random(seed).sample(range(n), 10))
    assert val == b"".join(example(i) + b"\n" for i in chosen)


def test_every_line_exactly_once_in_file_order(tmp_path: Path) -> None:
    n = 237
    src = make(tmp_path, n)
    _, train, val = split(tmp_path, src, fraction=0.3, seed=3)
    original = src.read_bytes().splitlines(keepends=True)
    train_lines = train.splitlines(keepends=True)
    val_lines = val.splitlines(keepends=True)
    assert sorted(train_lines + val_lines) == sorted(original)
    assert len(set(train_lines) & set(val_lines)) == 0
    index = {line: i for i, line in enumerate(original)}
    assert [index[x] for x in train_lines] == sorted(index[x] for x in train_lines)
    assert [index[x] for x in val_lines] == sorted(index[x] for x in val_lines)


def test_normalises_bom_crlf_blank_lines_and_final_newline(tmp_path: Path) -> None:
    lines = [example(i) for i in range(6)]
    raw = b"\xef\xbb\xbf" + lines[0] + b"\r\n\r\n" + b"\n".join(lines[1:5]) + b"\n \t\n" + lines[5] + b"\r"
    src = tmp_path / "odd.jsonl"
    src.write_bytes(raw)
    report = validate_file(src)
    assert report.ok and report.examples == 6
    counts, train, val = split(tmp_path, src, fraction=0.5, seed=11)
    assert counts == (3, 3)
    out = train + val
    assert b"\r" not in out and b"\xef\xbb\xbf" not in out
    assert train.endswith(b"\n") and val.endswith(b"\n")
    assert sorted(out.splitlines()) == sorted(lines)
    assert all(line.strip() for line in out.split(b"\n")[:-1])


def test_split_of_a_validated_file_matches_its_example_count(tmp_path: Path) -> None:
    src = make(tmp_path, 41)
    src.write_bytes(b"\n" + src.read_bytes() + b"\n\n")
    report = validate_file(src)
    counts, _, _ = split(tmp_path, src)
    assert sum(counts) == report.examples == 41
    assert counts == (33, 8)


# -- split_lines / split_streaming: the same bytes as split_file, into sinks and uploads ----------


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.mark.parametrize(
    ("n", "seed", "fraction"), [(2, 0, 0.2), (7, 1, 0.5), (250, 42, 0.2), (3000, 9, 0.1)]
)
def test_split_lines_and_split_streaming_give_split_file_s_bytes(
    tmp_path: Path, n: int, seed: int, fraction: float
) -> None:
    src = make(tmp_path, n)
    counts, train, val = split(tmp_path, src, fraction=fraction, seed=seed)

    routed: dict[str, list[bytes]] = {"train": [], "validation": []}
    assert (
        split_lines(src, routed["train"].append, routed["validation"].append, fraction=fraction, seed=seed)
        == counts
    )
    assert b"".join(routed["train"]) == train and b"".join(routed["validation"]) == val

    before = _threads()
    chunk_sizes: list[int] = []

    def collect(chunks: Iterable[bytes]) -> bytes:
        parts = list(chunks)
        chunk_sizes.extend(len(p) for p in parts)
        return b"".join(parts)

    # Small chunks and a shallow queue: many hand-overs between the threads.
    result = split_streaming(
        src, collect, collect, fraction=fraction, seed=seed, examples=n, chunk_size=1000, depth=1
    )
    assert (result.train, result.validation) == (train, val)
    assert (result.train_examples, result.validation_examples) == counts
    assert all(size > 0 for size in chunk_sizes)
    assert _threads() == before


def test_split_streaming_normalises_like_split_file(tmp_path: Path) -> None:
    src = tmp_path / "crlf.jsonl"
    src.write_bytes(
        b"\xef\xbb\xbf" + b"\r\n".join(example(i) for i in range(20)) + b"\r\n\n  \r\n" + example(20)
    )
    _, train, val = split(tmp_path, src, seed=3)
    result = split_streaming(src, b"".join, b"".join, seed=3)
    assert (result.train, result.validation) == (train, val)


@pytest.mark.parametrize("failing", ["train", "validation"])
def test_a_failed_upload_stops_the_split_and_raises_and_the_other_upload_commits_nothing(
    tmp_path: Path, failing: str
) -> None:
    src = make(tmp_path, 2000)
    before = _threads()
    committed: list[str] = []
    aborted: list[str] = []

    def upload(name: str) -> Callable[[Iterable[bytes]], str]:
        def run(chunks: Iterable[bytes]) -> str:
            if name == failing:
                raise ConnectionError(f"{name} upload refused")
            try:
                data = b"".join(chunks)
            except SplitAborted:
                aborted.append(name)
                raise
            committed.append(name)
            return data.decode()

        return run

    with pytest.raises(ConnectionError, match=f"{failing} upload refused"):
        split_streaming(src, upload("train"), upload("validation"), examples=2000, chunk_size=512, depth=1)
    assert committed == [] and aborted == [{"train": "validation", "validation": "train"}[failing]]
    assert _threads() == before


def test_an_upload_failing_mid_way_stops_the_split_early(tmp_path: Path) -> None:
    src = make(tmp_path, 5000)
    read: list[int] = []

    def flaky(chunks: Iterable[bytes]) -> None:
        for i, _ in enumerate(chunks):
            read.append(i)
            if i == 2:
                raise TimeoutError("stalled")

    written: list[bytes] = []

    def val(chunks: Iterable[bytes]) -> None:
        written.extend(chunks)

    before = _threads()
    with pytest.raises(TimeoutError):
        split_streaming(src, flaky, val, examples=5000, chunk_size=256, depth=1)
    assert read == [0, 1, 2]
    assert _threads() == before


def test_a_failed_split_aborts_both_uploads(tmp_path: Path) -> None:
    src = make(tmp_path, 100)
    outcomes: list[str] = []

    def upload(chunks: Iterable[bytes]) -> None:
        try:
            b"".join(chunks)
        except SplitAborted:
            outcomes.append("aborted")
            raise
        outcomes.append("committed")

    before = _threads()
    with pytest.raises(OSError, match="changed while it was being split"):
        split_streaming(src, upload, upload, examples=150)  # more lines counted than there are
    assert outcomes == ["aborted", "aborted"]
    assert _threads() == before
