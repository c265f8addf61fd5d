"""python -m core.validation: readable and JSON reports, exit codes 0 / 1 / 2, never a traceback."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.validation import __main__ as cli
from core.validation import validate_file
from tests.core.test_validation import BAD, CORPUS, GOOD, GOOD_SYS, conv, tiny_tokenizer, ultrachat_lines

ROOT = Path(__file__).resolve().parents[2]
TOLERATED = {"bom.jsonl", "crlf.jsonl", "blank_lines.jsonl", "extra_fields.jsonl", "duplicates.jsonl"}


def run(*args: str | Path, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "core.validation", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(tmp_path: Path, data: bytes, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


# --- subprocess runs ----------------------------------------------------------------------------


def test_good_file_exits_0_with_a_readable_report(tmp_path: Path) -> None:
    path = write(tmp_path, b"\n".join(ultrachat_lines(40)) + b"\n", "chat.jsonl")
    proc = run(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert f"{path}  OK: 40 examples" in out
    for label in ("Summary", "Examples", "Tokens", "Token counts", "estimate (an upper bound)"):
        assert label in out
    assert "Longest line" in out and "Roles" in out and "Turns per example" in out
    assert "Duplicates" in out and "Errors" not in out
    assert "Result: no errors (exit 0)" in out


def test_bad_file_exits_1_and_lists_lines(tmp_path: Path) -> None:
    bad_role = GOOD.replace(b'"assistant"', b'"bot"')
    no_reply = conv(("user", "Hi"))
    path = write(tmp_path, b"\n".join([GOOD, bad_role, GOOD_SYS, no_reply, b'{"messages": [1 2]}']) + b"\n")
    proc = run(path)
    assert proc.returncode == 1
    no_traceback(proc)
    out = proc.stdout
    assert "Errors (3)" in out
    for line, field in [(2, "messages[1].role"), (4, "messages"), (5, "-")]:
        row = next(r for r in out.splitlines() if f"{path}:{line} " in r)
        assert f" {field} " in row
    assert "'bot'" in out and "no assistant message" in out and "invalid JSON" in out
    assert "Result: errors found" in out and "(exit 1)" in out


def test_missing_path_exits_2_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    proc = run(missing)
    assert proc.returncode == 2
    no_traceback(proc)
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ")
    assert str(missing) in proc.stderr and "no such file" in proc.stderr and "Check the path" in proc.stderr


def test_directory_exits_2_and_names_the_files_inside(tmp_path: Path) -> None:
    write(tmp_path, GOOD + b"\n", "train_data.jsonl")
    proc = run(tmp_path)
    assert proc.returncode == 2
    no_traceback(proc)
    assert str(tmp_path) in proc.stderr and "is a directory" in proc.stderr
    assert "train_data.jsonl" in proc.stderr and "pass the path of a .jsonl file" in proc.stderr


def test_missing_validation_file_exits_2(tmp_path: Path) -> None:
    train = write(tmp_path, GOOD + b"\n")
    proc = run(train, "--validation", tmp_path / "holdout.jsonl")
    assert proc.returncode == 2
    no_traceback(proc)
    assert "holdout.jsonl" in proc.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + b"\n" + GOOD_SYS + b"\n")
    path.chmod(0)
    try:
        proc = run(path)
    finally:
        path.chmod(0o600)
    assert proc.returncode == 2
    no_traceback(proc)
    assert "permission denied" in proc.stderr and "chmod" in proc.stderr


def test_json_output_parses(tmp_path: Path) -> None:
    path = write(tmp_path, b"\n".join([GOOD, GOOD_SYS, GOOD, conv(("user", "Hi"))]) + b"\n")
    proc = run(path, "--json", "--max-errors", "5", "--max-tokens", "100")
    assert proc.returncode == 1
    document = json.loads(proc.stdout)
    assert document["ok"] is False and document["exit_code"] == 1 and document["overlap"] is None
    [report] = document["reports"]
    assert report["file"] == str(path)
    assert report["error_count"] == 1 and report["errors"][0]["line"] == 4
    assert report["duplicates"] == 1 and report["warnings"][0]["line"] == 3
    assert report["token_method"] == "estimate" and report["tokens"]["max_line"] == 2
    assert report["turns"] == {"1": 3}
    assert report == json.loads(validate_file(path, display_name=str(path), max_tokens=100).model_dump_json())


def test_sha256_only_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path, b"\n".join([GOOD, GOOD_SYS]) + b"\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    plain, hashed = run(path), run(path, "--sha256")
    assert plain.returncode == hashed.returncode == 0
    assert "SHA-256" not in plain.stdout and digest not in plain.stdout
    assert "SHA-256" in hashed.stdout and digest in hashed.stdout


def test_json_output_for_unreadable_input(tmp_path: Path) -> None:
    proc = run(tmp_path / "nope.jsonl", "--json")
    assert proc.returncode == 2
    no_traceback(proc)
    document = json.loads(proc.stdout)
    assert document["exit_code"] == 2 and "no such file" in document["error"]


def test_validation_file_overlap(tmp_path: Path) -> None:
    train = write(tmp_path, b"\n".join(ultrachat_lines(10)) + b"\n", "train.jsonl")
    holdout = write(tmp_path, b"\n".join([ultrachat_lines(10)[3], GOOD]) + b"\n", "holdout.jsonl")
    proc = run(train, "--validation", holdout, "--json")
    assert proc.returncode == 0, proc.stdout
    document = json.loads(proc.stdout)
    assert document["ok"] is True and document["overlap"] == 1
    train_report, holdout_report = document["reports"]
    assert train_report["file"] == str(train) and train_report["overlap"] == 0
    [warning] = holdout_report["warnings"]
    assert warning["line"] == 1 and f"line 4 of the training file {train}" in warning["message"]

    readable = run(train, "--validation", holdout)
    assert readable.returncode == 0
    assert f"{holdout}:1 " in readable.stdout and "(overlap)" in readable.stdout
    assert "Train/validation overlap: 1 validation example(s)" in readable.stdout


def test_single_examples_are_fine_with_a_validation_file(tmp_path: Path) -> None:
    train = write(tmp_path, GOOD + b"\n", "train.jsonl")
    holdout = write(tmp_path, GOOD_SYS + b"\n", "holdout.jsonl")
    assert run(train).returncode == 1  # alone it must be splittable: 2 examples
    assert run(train, "--validation", holdout).returncode == 0


def test_tokenizer_option(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path / "tok" / "tokenizer.json")
    path = write(tmp_path, GOOD + b"\n" + GOOD_SYS + b"\n")
    proc = run(path, "--tokenizer", tok.parent, "--json")
    assert proc.returncode == 0, proc.stderr
    [report] = json.loads(proc.stdout)["reports"]
    assert report["token_method"] == f"tokenizer:{tok.parent}"

    readable = run(path, "--tokenizer", tok)
    assert readable.returncode == 0 and f"tokenizer:{tok}" in readable.stdout


@pytest.mark.parametrize("bad", ["missing", "empty_dir", "not_json"])
def test_bad_tokenizer_exits_2(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path, GOOD + b"\n" + GOOD_SYS + b"\n")
    target = {"missing": tmp_path / "nope.json", "empty_dir": tmp_path / "d", "not_json": path}[bad]
    if bad == "empty_dir":
        target.mkdir()
    proc = run(path, "--tokenizer", target)
    assert proc.returncode == 2
    no_traceback(proc)
    assert proc.stderr.startswith("error: ") and str(target) in proc.stderr
    assert "tokenizer" in proc.stderr


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    proc = run(write(tmp_path, GOOD + b"\n"), "--max-errors", "0")
    assert proc.returncode == 2 and "must be at least 1" in proc.stderr
    no_traceback(proc)


# --- the bad-input corpus through the CLI (in process: same main(), much faster) ---------------


def expected_exit(name: str) -> int:
    return 0 if name in TOLERATED else 1


def test_corpus_is_the_validation_corpus() -> None:
    assert {p.name for p in BAD.iterdir()} == set(CORPUS) | TOLERATED


@pytest.mark.parametrize("name", sorted(p.name for p in BAD.iterdir()))
def test_every_corpus_file_gives_a_clear_report_and_exit_code(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    path = BAD / name
    code = cli.main([str(path)])
    out, err = capsys.readouterr()
    assert code == expected_exit(name)
    assert err == ""
    assert f"(exit {code})" in out
    for line, field, fragment in CORPUS.get(name, []):
        where = f"{path}:{line} " if line else f"{path} (whole file)"
        row = next(r for r in out.splitlines() if where in r and fragment[:40] in r)
        assert f" {field or '-'} " in row
    if name in TOLERATED:
        assert "OK:" in out

    assert cli.main([str(path), "--json"]) == code
    document = json.loads(capsys.readouterr().out)
    assert document["exit_code"] == code
    assert [(e["line"], e["field"]) for e in document["reports"][0]["errors"]] == [
        (line, field) for line, field, _ in CORPUS.get(name, [])
    ]


@pytest.mark.parametrize(
    ("name", "warning"),
    [
        ("bom.jsonl", "byte-order mark"),
        ("crlf.jsonl", "CRLF"),
        ("blank_lines.jsonl", "blank line(s) skipped"),
        ("duplicates.jsonl", "duplicate of line 1"),
    ],
)
def test_tolerated_cases_show_their_warning(
    name: str, warning: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert cli.main([str(BAD / name)]) == 0
    out = capsys.readouterr().out
    assert "Warnings (" in out and warning in out


def test_10mb_single_line_is_an_error(tmp_path: Path) -> None:
    huge = b'{"messages": [{"role": "user", "content": "' + b"a" * (10 * 1000 * 1000) + b'"}]}'
    path = write(tmp_path, GOOD + b"\n" + huge + b"\n" + GOOD_SYS + b"\n")
    proc = run(path)
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"{path}:2 " in proc.stdout and f"line is {len(huge)} bytes; limit 8 MiB" in proc.stdout


def test_real_gzip_named_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(GOOD + b"\n" + GOOD_SYS + b"\n"), "chat.jsonl")
    proc = run(path)
    assert proc.returncode == 1
    assert "file is gzip-compressed; upload the uncompressed .jsonl" in proc.stdout


def test_narrow_terminal_keeps_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + b"\n" + GOOD.replace(b'"assistant"', b'"bot"') + b"\n")
    proc = run(path, columns=60)
    assert proc.returncode == 1
    assert f"{path.name}:2" in proc.stdout.replace("\n", "").replace("│", "").replace(" ", "")


def test_permission_denied_message_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same path as test_unreadable_file_exits_2, for runs as root (which reads any file)."""
    path = write(tmp_path, GOOD + b"\n" + GOOD_SYS + b"\n")

    def denied(file: object, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(cli, "open", denied, raising=False)
    assert cli.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: dataset {path}: permission denied") and "chmod u+r" in err
