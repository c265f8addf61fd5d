"""core.validation: exact line/field for every rule, warnings, bounded memory, properties."""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import math
import re
import threading
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import astuple

from core.models import DatasetOutcome, ValidationReport
from core.validation import (
    MAX_LINE_BYTES,
    PairReport,
    chat_text,
    checker,
    conversation_digest,
    duplicates,
    estimate_tokens,
    load_tokenizer,
    reading,
    rules,
    schema,
    validate_file,
    validate_pair,
)
from core.validation.report import _percentile

BAD = Path(__file__).parent / "data" / "bad"
MiB = 1024 * 1024


def conv(*pairs: tuple[str, str], **extra: object) -> bytes:
    record = dict(extra)
    record["messages"] = [{"role": r, "content": c} for r, c in pairs]
    return json.dumps(record, ensure_ascii=False).encode()


GOOD = conv(("user", "What is 2+2?"), ("assistant", "2+2 is 4."), prompt="What is 2+2?", prompt_id="p1")
GOOD_SYS = conv(("system", "You are terse."), ("user", "Name a colour."), ("assistant", "Blue."))


def write(tmp_path: Path, data: bytes, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def where(report: ValidationReport) -> list[tuple[int, str]]:
    return [(e.line, e.field) for e in report.errors]


# --- the committed corpus of malformed files -------------------------------------------------

# file -> exact (line, field) of every error, and a fragment each message must contain
CORPUS: dict[str, list[tuple[int, str, str]]] = {
    "truncated_last_line.jsonl": [(3, "", "invalid JSON")],
    "messages_not_list.jsonl": [(2, "messages", "got string")],
    "content_number.jsonl": [(2, "messages[1].content", "got number")],
    "role_int.jsonl": [(3, "messages[0].role", "got number")],
    "bad_role.jsonl": [(2, "messages[1].role", "'bot'")],
    "empty_content.jsonl": [(2, "messages[1].content", "empty")],
    "whitespace_content.jsonl": [(1, "messages[0].content", "whitespace")],
    "not_object.jsonl": [(2, "", "got array"), (3, "", "got string"), (4, "", "got null")],
    "consecutive_roles.jsonl": [(2, "messages[1].role", "two 'user' messages in a row")],
    "no_assistant.jsonl": [(2, "messages", "no assistant message")],
    "ends_with_user.jsonl": [(2, "messages", "must end with an assistant message")],
    "system_not_first.jsonl": [(2, "messages[1].role", "system message")],
    "invalid_utf8.jsonl": [(2, "", "invalid UTF-8")],
    "invalid_utf8_extra_field.jsonl": [(1, "", "invalid UTF-8")],
    "gzip_named.jsonl": [(0, "", "file is gzip-compressed; upload the uncompressed .jsonl")],
    "empty.jsonl": [(0, "", "file is empty")],
    "only_blank_lines.jsonl": [(0, "", "file is empty")],
    "single_example.jsonl": [(0, "", "need at least 2")],
    "missing_messages.jsonl": [(2, "messages", "missing required field 'messages'")],
    "empty_messages.jsonl": [(2, "messages", "empty")],
    "message_not_object.jsonl": [(2, "messages[0]", "got string")],
    "missing_role_and_content.jsonl": [
        (2, "messages[0].role", "missing required field 'role'"),
        (2, "messages[1].content", "missing required field 'content'"),
    ],
    "nan.jsonl": [(2, "", "NaN")],
    "lone_surrogate.jsonl": [(2, "messages[0].content", "surrogate")],
    "trailing_garbage.jsonl": [(2, "", "invalid JSON")],
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_exact_line_and_field(name: str) -> None:
    report = validate_file(BAD / name, display_name=f"datasets/{name}")
    expected = CORPUS[name]
    assert where(report) == [(line, field) for line, field, _ in expected]
    for issue, (_, _, fragment) in zip(report.errors, expected, strict=True):
        assert fragment in issue.message
        assert issue.file == f"datasets/{name}"
    assert report.error_count == len(expected)
    assert not report.ok
    assert report.file == f"datasets/{name}"


def test_corpus_is_covered() -> None:
    tolerated = {"bom.jsonl", "crlf.jsonl", "blank_lines.jsonl", "extra_fields.jsonl", "duplicates.jsonl"}
    assert {p.name for p in BAD.iterdir()} == set(CORPUS) | tolerated


def test_truncated_last_line_says_it_is_cut_off() -> None:
    message = validate_file(BAD / "truncated_last_line.jsonl").errors[0].message
    assert re.search(r"at column \d+", message)
    assert "truncated" in message and "no newline" in message


def test_bad_role_lists_allowed_roles() -> None:
    message = validate_file(BAD / "bad_role.jsonl").errors[0].message
    assert "'system', 'user', 'assistant'" in message and "'bot'" in message


def test_invalid_json_reports_column(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + b"\n" + b'{"messages": [1 2]}\n' + GOOD_SYS + b"\n")
    [issue] = validate_file(path).errors
    assert (issue.line, issue.field) == (2, "")
    assert issue.message.startswith("invalid JSON: ")
    assert issue.message.endswith("at column 17")
    assert "truncated" not in issue.message


def test_gzip_is_one_error_and_still_hashed() -> None:
    path = BAD / "gzip_named.jsonl"
    report = validate_file(path, checksum=True)
    assert report.error_count == 1 and report.lines == 0 and report.examples == 0
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_empty_file(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, b""), checksum=True)
    assert where(report) == [(0, "")]
    assert report.errors[0].message == "file is empty"
    assert report.lines == 0 and report.examples == 0
    assert report.sha256 == hashlib.sha256(b"").hexdigest()


def test_single_example_fails_but_min_examples_can_lower_it(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + b"\n")
    assert not validate_file(path).ok
    report = validate_file(path, min_examples=1)
    assert report.ok and report.examples == 1


# --- tolerated oddities: warnings, still ok ---------------------------------------------------


def test_bom_is_a_warning() -> None:
    report = validate_file(BAD / "bom.jsonl")
    assert report.ok and report.examples == 2
    assert [(w.line, w.field) for w in report.warnings] == [(1, "")]
    assert "byte-order mark" in report.warnings[0].message


def test_crlf_is_one_warning() -> None:
    report = validate_file(BAD / "crlf.jsonl")
    assert report.ok and report.examples == 2 and report.lines == 2
    [warning] = report.warnings
    assert warning.line == 1 and "2 line(s) end with CRLF" in warning.message


def test_blank_lines_are_one_warning_with_the_count() -> None:
    report = validate_file(BAD / "blank_lines.jsonl")
    assert report.ok and report.examples == 2 and report.lines == 6
    [warning] = report.warnings
    assert warning.line == 1 and warning.message.startswith("4 blank line(s) skipped")


def test_extra_fields_are_allowed_silently() -> None:
    report = validate_file(BAD / "extra_fields.jsonl")
    assert report.ok and report.examples == 2 and not report.warnings


def test_many_lines_with_extra_fields_switch_decoder_and_still_check_utf8(tmp_path: Path) -> None:
    extra = conv(("user", "Hi"), ("assistant", "Hello."), source="web")
    bad = b'{"source": "\xff", ' + conv(("user", "Hi"), ("assistant", "ok"))[1:]
    lines = [extra] * 40 + [bad] + [extra] * 5 + [GOOD.replace(b"2+2 is 4.", b"")]
    report = validate_file(write(tmp_path, b"\n".join(lines) + b"\n"))
    assert where(report) == [(41, ""), (47, "messages[1].content")]
    assert "invalid UTF-8" in report.errors[0].message
    assert report.examples == 45


def test_prompt_is_not_type_checked_but_must_be_utf8(tmp_path: Path) -> None:
    odd_prompt = conv(("user", "Hi"), ("assistant", "Hello."), prompt=5, prompt_id=None)
    bad_prompt = b'{"prompt": "\xe2\x82", ' + conv(("user", "Hi"), ("assistant", "ok"))[1:]
    report = validate_file(write(tmp_path, b"\n".join([odd_prompt, bad_prompt, GOOD]) + b"\n"))
    assert where(report) == [(2, "")]
    assert "invalid UTF-8" in report.errors[0].message


# --- conversation rules and token limit -------------------------------------------------------


def test_several_errors_in_one_line_each_reported(tmp_path: Path) -> None:
    line = conv(("assistant", " "), ("system", "late"), ("assistant", "again"), ("assistant", ""))
    report = validate_file(write(tmp_path, GOOD + b"\n" + line + b"\n"))
    assert where(report) == [
        (2, "messages[0].content"),
        (2, "messages[1].role"),
        (2, "messages[3].role"),
        (2, "messages[3].content"),
        (2, "messages"),
    ]
    assert "no user message" in report.errors[-1].message
    assert "messages[2] and messages[3]" in report.errors[2].message


def test_system_only_first_and_alternation_accepts_leading_system(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, GOOD_SYS + b"\n" + GOOD + b"\n"))
    assert report.ok
    assert report.role_counts == {"system": 1, "user": 2, "assistant": 2}


def test_token_limit(tmp_path: Path) -> None:
    long = conv(("user", "x" * 1000), ("assistant", "y" * 1001))
    expected = 1 + 4 + 500 + 4 + 501
    assert estimate_tokens([("user", "x" * 1000), ("assistant", "y" * 1001)]) == expected
    path = write(tmp_path, GOOD + b"\n" + long + b"\n" + GOOD_SYS + b"\n")
    report = validate_file(path, max_tokens=expected - 1)
    assert where(report) == [(2, "messages")]
    assert str(expected) in report.errors[0].message and str(expected - 1) in report.errors[0].message
    assert validate_file(path, max_tokens=expected).ok


def test_max_errors_caps_the_list_but_counts_all(tmp_path: Path) -> None:
    bad = conv(("user", "Hi"))
    path = write(tmp_path, b"\n".join([GOOD] + [bad] * 120) + b"\n")
    report = validate_file(path, max_errors=7)
    assert report.error_count == 120
    assert len(report.errors) == 7
    assert [e.line for e in report.errors] == list(range(2, 9))
    assert report.examples == 1 and not report.ok


# --- a good file: counts, stats, hash ----------------------------------------------------------


def ultrachat_lines(n: int) -> list[bytes]:
    lines = []
    for i in range(n):
        pairs: list[tuple[str, str]] = []
        if i % 5 == 0:
            pairs.append(("system", "You are a helpful assistant."))
        for turn in range(1 + i % 3):
            pairs.append(
                ("user", f"Question {i}.{turn}: tell me about item {i} — café ünïcödé " * (1 + i % 4))
            )
            pairs.append(("assistant", f"Answer {i}.{turn}. " + "word " * (3 * i % 50)))
        lines.append(conv(*pairs, prompt=pairs[-2][1], prompt_id=f"{i:064x}"))
    return lines


def test_good_ultrachat_file(tmp_path: Path) -> None:
    lines = ultrachat_lines(200)
    data = b"\n".join(lines) + b"\n"
    report = validate_file(write(tmp_path, data), display_name="datasets/chat.jsonl", checksum=True)
    assert report.ok and report.error_count == 0 and not report.errors and not report.warnings
    assert report.examples == 200 and report.lines == 200
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    records = [json.loads(line)["messages"] for line in lines]
    counts = {"system": 0, "user": 0, "assistant": 0}
    for messages in records:
        for m in messages:
            counts[m["role"]] += 1
    assert report.role_counts == counts
    tokens = [estimate_tokens([(m["role"], m["content"]) for m in messages]) for messages in records]
    ordered = sorted(tokens)
    assert report.tokens.total == sum(tokens)
    assert report.tokens.max == max(tokens)
    assert report.tokens.max_line == tokens.index(max(tokens)) + 1
    assert report.tokens.p50 == ordered[math.ceil(0.50 * len(ordered)) - 1]
    assert report.tokens.p95 == ordered[math.ceil(0.95 * len(ordered)) - 1]


def test_max_line_is_the_first_of_equal_maxima(tmp_path: Path) -> None:
    big = conv(("user", "a" * 300), ("assistant", "b" * 300))
    report = validate_file(write(tmp_path, b"\n".join([GOOD, big, GOOD_SYS, big]) + b"\n"))
    assert report.tokens.max == estimate_tokens([("user", "a" * 300), ("assistant", "b" * 300)])
    assert report.tokens.max_line == 2


def test_multi_chunk_file_leaves_no_thread_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "_CHUNK", 64)
    data = b"\n".join(ultrachat_lines(50)) + b"\n"
    before = threading.active_count()
    report = validate_file(write(tmp_path, data), checksum=True)
    assert report.ok and report.sha256 == hashlib.sha256(data).hexdigest()
    assert threading.active_count() == before


def test_no_trailing_newline_still_counts_last_line(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, GOOD + b"\n" + GOOD_SYS))
    assert report.ok and report.lines == 2 and report.examples == 2


def test_percentiles_nearest_rank() -> None:
    assert _percentile(Counter([4, 2, 3, 1]), 50) == 2
    assert _percentile(Counter([1, 2, 3, 4]), 95) == 4
    assert _percentile(Counter([7]), 95) == 7
    assert _percentile(Counter([5, 5, 5, 9]), 75) == 5
    assert _percentile(Counter([5, 5, 5, 9]), 76) == 9
    assert _percentile(Counter(range(1, 101)), 95) == 95


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_tiny_chunks_give_the_same_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    lines = [*ultrachat_lines(30), b"", b"  ", conv(("user", "Hi")), b"[1]", GOOD + b"\r"]
    data = b"\xef\xbb\xbf" + b"\n".join(lines)  # BOM, CRLF on the last line, no final newline
    path = write(tmp_path, data)
    expected = validate_file(path, checksum=True)
    monkeypatch.setattr(reading, "_CHUNK", chunk)
    assert validate_file(path, checksum=True) == expected
    assert where(expected) == [(33, "messages"), (34, "")]
    assert expected.examples == 31 and expected.lines == 35
    assert expected.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 20])
def test_line_bookkeeping_matches_a_plain_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """CRLF lines, blank lines and the longest line are found per segment or only on lines
    longer than the longest so far; they must still agree with reading the lines one by one."""
    long_crlf = conv(("user", "x" * 300), ("assistant", "y")) + b"\r"
    lines = [GOOD, GOOD + b"\r", b"", b" \t " * 200, b"\r", GOOD_SYS, long_crlf, b"   ", GOOD + b"\r", GOOD]
    path = write(tmp_path, b"\n".join(lines) + b"\n")
    monkeypatch.setattr(reading, "_CHUNK", chunk)
    report = validate_file(path)

    crlf = [i for i, line in enumerate(lines, 1) if line.endswith(b"\r")]
    blank = [i for i, line in enumerate(lines, 1) if not line.strip()]
    sizes = {i: len(line.rstrip(b"\r")) for i, line in enumerate(lines, 1) if line.strip()}
    longest = max(sizes, key=lambda i: (sizes[i], -i))
    messages = [w.message for w in report.warnings]
    assert f"{len(crlf)} line(s) end with CRLF (\\r\\n), first at line {crlf[0]}" in messages[1]
    assert messages[0] == f"{len(blank)} blank line(s) skipped (first at line {blank[0]})"
    assert (
        (report.longest_line, report.longest_line_bytes)
        == (longest, sizes[longest])
        == (7, len(long_crlf) - 1)
    )
    assert report.ok and report.examples == len(lines) - len(blank)


# --- over-long lines: bounded memory ----------------------------------------------------------


def test_10mb_line_is_an_error_and_memory_stays_bounded(tmp_path: Path) -> None:
    size = 10 * 1000 * 1000
    huge = b'{"messages": [{"role": "user", "content": "' + b"a" * (size - 60)
    huge += b'"}, {"role": "assistant", "content": "b"}]}'
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as f:
        f.write(GOOD + b"\n")
        f.write(huge + b"\n")
        f.write(GOOD_SYS + b"\n")
    del huge
    gc.collect()
    tracemalloc.start()
    try:
        report = validate_file(path, checksum=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert where(report) == [(2, "")]
    n = path.stat().st_size - len(GOOD) - len(GOOD_SYS) - 3
    assert report.errors[0].message == f"line is {n} bytes; limit 8 MiB"
    assert report.examples == 2 and report.lines == 3
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("content_len", "terminator", "oversize"),
    [
        (MAX_LINE_BYTES, b"\n", False),
        (MAX_LINE_BYTES, b"\r\n", False),
        (MAX_LINE_BYTES, b"", False),
        (MAX_LINE_BYTES + 1, b"\n", True),
        (MAX_LINE_BYTES + 1, b"\r\n", True),
        (MAX_LINE_BYTES + 1, b"", True),
    ],
)
def test_line_limit_is_exact(tmp_path: Path, content_len: int, terminator: bytes, oversize: bool) -> None:
    head = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "'
    tail = b'"}]}'
    line = head + b"z" * (content_len - len(head) - len(tail)) + tail
    path = write(tmp_path, GOOD + b"\n" + line + terminator)
    report = validate_file(path, max_tokens=10**9)
    if oversize:
        assert where(report) == [(2, "")]
        assert report.errors[0].message == f"line is {content_len} bytes; limit 8 MiB"
    else:
        assert report.ok, report.errors
        assert report.examples == 2


@pytest.mark.parametrize("chunk", [1, 3, 5, 64])
@pytest.mark.parametrize("terminator", [b"\n", b"\r\n", b""])
def test_skipping_long_lines_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, terminator: bytes
) -> None:
    monkeypatch.setattr(reading, "_CHUNK", chunk)
    monkeypatch.setattr(checker, "MAX_LINE_BYTES", 200)
    long = b"q" * 201
    ok_long = conv(("user", "x" * 75), ("assistant", "y" * 40))
    assert len(ok_long) == 200  # exactly at the (patched) limit
    data = b"\n".join([GOOD, long, ok_long, b"w" * 500, GOOD_SYS, long + b"\r"]) + terminator
    report = validate_file(write(tmp_path, data))
    last = 202 if terminator == b"\r\n" else 201  # "\r\r\n": one "\r" is content
    assert where(report) == [(2, ""), (4, ""), (6, "")]
    assert [e.message for e in report.errors] == [
        "line is 201 bytes; limit 8 MiB",
        "line is 500 bytes; limit 8 MiB",
        f"line is {last} bytes; limit 8 MiB",
    ]
    assert report.examples == 3 and report.lines == 6


# --- API contract -----------------------------------------------------------------------------


def test_unreadable_path_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        validate_file(tmp_path / "missing.jsonl")
    with pytest.raises(OSError):
        validate_file(tmp_path)


def test_display_name_defaults_to_file_name() -> None:
    report = validate_file(BAD / "no_assistant.jsonl")
    assert report.file == "no_assistant.jsonl"
    assert report.errors[0].file == "no_assistant.jsonl"


# --- estimate_tokens --------------------------------------------------------------------------


def test_estimate_tokens_formula() -> None:
    assert estimate_tokens([]) == 1
    assert estimate_tokens([("user", "")]) == 5
    assert estimate_tokens([("user", "abc")]) == 1 + 4 + 2
    assert estimate_tokens([("user", "é")]) == 1 + 4 + 1  # 2 bytes
    assert estimate_tokens([("user", "日本")]) == 1 + 4 + 3  # 6 bytes
    assert estimate_tokens([("system", "ab"), ("user", "abc"), ("assistant", "😀")]) == 1 + 12 + 1 + 2 + 2


@given(st.text(), st.text())
def test_estimate_tokens_monotonic_in_content_length(text: str, more: str) -> None:
    assert estimate_tokens([("user", text + more)]) >= estimate_tokens([("user", text)])


ascii_words = st.lists(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1), max_size=40
)


@given(st.lists(st.tuples(ascii_words, st.sampled_from([" ", "  ", "\n", " \t "])), min_size=1, max_size=6))
def test_estimate_tokens_at_least_words_plus_template(messages: list[tuple[list[str], str]]) -> None:
    pairs = [("user", sep.join(words)) for words, sep in messages]
    words = sum(len(content.split()) for _, content in pairs)
    assert estimate_tokens(pairs) >= words + 4 * len(pairs)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["system", "user", "assistant"]),
            st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "\n\t", "\u3000"])),
        ),
        max_size=7,
    ),
    st.integers(1, 60),
)
def test_fast_path_agrees_with_the_detailed_check(pairs: list[tuple[str, str]], max_tokens: int) -> None:
    messages = [schema.Message(role=r, content=c) for r, c in pairs]  # type: ignore[arg-type]
    fast = rules.passes(messages, max_tokens)
    problems, tokens, n_system, n_user, n_assistant = rules.check_conversation(messages, max_tokens)
    if fast is None:
        assert problems
    else:
        assert problems is None
        shape = 2 * len(messages) + n_system
        assert fast == (tokens, shape, duplicates.content_fingerprint(messages))
        assert tokens == estimate_tokens(pairs)
        shapes = [0] * (shape + 1)
        shapes[shape] = 3
        roles, turns = rules.count_roles(shapes)
        assert roles == {"system": 3 * n_system, "user": 3 * n_user, "assistant": 3 * n_assistant}
        assert turns == {n_user: 3}


# --- property: arbitrary damage never raises and always points inside the file ----------------

ROLE_STRINGS = [b'"user"', b'"assistant"', b'"system"', b'"bot"', b'"User"', b'""', b"1", b"null", b'"user']


@st.composite
def mutated_line(draw: st.DrawFn) -> bytes:
    line = bytearray(
        draw(st.sampled_from([GOOD, GOOD_SYS, conv(("user", "Ça va? 😀"), ("assistant", "Oui\nmerci"))]))
    )
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "role"]))
        pos = draw(st.integers(0, max(len(line) - 1, 0)))
        if op == "delete" and line:
            del line[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            line[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif op == "replace" and line:
            line[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del line[pos:]
        elif op == "role":
            roles = [m.start() for m in re.finditer(rb'"(user|assistant|system)"', line)]
            if roles:
                at = draw(st.sampled_from(roles))
                old = re.match(rb'"(user|assistant|system)"', line[at:])
                assert old is not None
                line[at : at + old.end()] = draw(st.sampled_from(ROLE_STRINGS))
    return bytes(line)


def reference_ok(line: bytes) -> bool:
    """An independent, slow statement of the rules for one non-blank line."""

    def reject(name: str) -> None:
        raise ValueError(name)

    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=reject)
    except (ValueError, RecursionError):
        return False

    def strings(value: object) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in [k, *strings(v)]]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return []

    try:
        for s in strings(obj):
            s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        return False
    roles = []
    for i, m in enumerate(obj["messages"]):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            return False
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return False
        if m["role"] == "system" and i > 0:
            return False
        if roles and m["role"] == roles[-1]:
            return False
        roles.append(m["role"])
    return "user" in roles and roles[-1] == "assistant"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated_line(), st.sampled_from([1, 5, 1 << 20]))
def test_mutations_never_raise_and_point_inside_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, middle: bytes, chunk: int
) -> None:
    monkeypatch.setattr(reading, "_CHUNK", chunk)
    data = GOOD + b"\n" + middle + b"\n" + GOOD_SYS + b"\n"
    path = write(tmp_path, data)
    report = validate_file(path, max_errors=5, checksum=True)

    physical = data.split(b"\n")[:-1]
    assert report.lines == len(physical)
    assert report.ok == (report.error_count == 0)
    assert len(report.errors) == min(report.error_count, 5)
    for issue in report.errors:
        assert 2 <= issue.line <= report.lines - 1  # only the damaged middle lines can be wrong
        assert issue.message
    middle_lines = [ln.removesuffix(b"\r") for ln in physical[1:-1]]
    nonblank = [ln for ln in middle_lines if ln and not ln.isspace()]
    valid = [ln for ln in nonblank if reference_ok(ln)]
    assert report.examples == 2 + len(valid)
    assert report.ok == (len(valid) == len(nonblank))
    assert report.sha256 == hashlib.sha256(data).hexdigest()


# --- duplicates -------------------------------------------------------------------------------


def warned(report: ValidationReport) -> list[tuple[int, str, str]]:
    return [(w.line, w.field, w.message) for w in report.warnings]


def test_duplicates_ignore_json_formatting_key_order_escapes_and_extra_fields() -> None:
    report = validate_file(BAD / "duplicates.jsonl", display_name="datasets/dups.jsonl")
    assert report.ok and report.examples == 6 and report.duplicates == 3
    same = "same messages (roles and contents)"
    assert warned(report) == [
        (2, "messages", f"duplicate of line 1: {same}"),  # compact JSON, other key order
        (4, "messages", f"duplicate of line 1: {same}"),  # spaces everywhere, "\u003f" for "?"
        (6, "messages", f"duplicate of line 3: {same}"),  # extra fields, relaxed decoder
    ]
    assert all(w.file == "datasets/dups.jsonl" for w in report.warnings)
    # line 5 differs by one trailing space: not a duplicate


def test_duplicate_needs_same_roles_and_same_split_of_contents(tmp_path: Path) -> None:
    lines = [
        conv(("user", "a b"), ("assistant", "c")),
        conv(("user", "a"), ("assistant", "b c")),  # same text, split differently
        conv(("system", "a b"), ("user", "x"), ("assistant", "c")),
        conv(("user", "x"), ("assistant", "c")),
        conv(("user", "a b"), ("assistant", "c"), prompt="other", prompt_id="other"),  # dup of 1
    ]
    report = validate_file(write(tmp_path, b"\n".join(lines) + b"\n"))
    assert [(w.line, w.message.split(":")[0]) for w in report.warnings] == [(5, "duplicate of line 1")]
    assert report.duplicates == 1


def test_duplicates_are_capped_like_errors_and_all_counted(tmp_path: Path) -> None:
    path = write(tmp_path, b"\n".join([GOOD] * 120 + [GOOD_SYS] * 3) + b"\n")
    report = validate_file(path, max_errors=7)
    assert report.ok and report.examples == 123 and report.duplicates == 121
    assert [w.line for w in report.warnings] == [*range(2, 9), 0]
    assert all(w.message.startswith("duplicate of line 1:") for w in report.warnings[:7])
    assert report.warnings[-1].message == "121 duplicate examples in all; only the first 7 are listed"


def test_invalid_lines_are_never_duplicates(tmp_path: Path) -> None:
    bad = conv(("user", "Hi"))  # no assistant message
    report = validate_file(write(tmp_path, b"\n".join([GOOD, bad, bad, GOOD_SYS]) + b"\n"))
    assert where(report) == [(3 - 1, "messages"), (3, "messages")]
    assert report.duplicates == 0 and not report.warnings


def test_other_warnings_come_first_then_duplicates(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + GOOD + b"\r\n\n" + GOOD + b"\n"
    report = validate_file(write(tmp_path, data))
    assert [(w.line, w.field) for w in report.warnings] == [(1, ""), (2, ""), (1, ""), (3, "messages")]


def test_conversation_digest_matches_the_validator(tmp_path: Path) -> None:
    pairs = [("user", "Ça va? 😀"), ("assistant", "Oui\nmerci")]
    (train := tmp_path / "t.jsonl").write_bytes(conv(*pairs) + b"\n")
    messages = [schema.Message(role=r, content=c) for r, c in pairs]  # type: ignore[arg-type]
    assert conversation_digest(pairs) == hash(tuple(map(astuple, messages)))
    strict = schema.STRICT.decode(conv(*pairs)).messages
    relaxed = schema.RELAXED.decode(conv(*pairs, source="web")).messages
    assert conversation_digest(pairs) == hash(tuple(map(astuple, strict)))
    assert conversation_digest(pairs) == hash(tuple(map(astuple, relaxed)))
    assert validate_pair(train, train).overlap == 1


def render(pairs: list[tuple[str, str]], style: int) -> bytes:
    """One conversation as a JSONL line, in one of several equivalent JSON spellings."""
    messages = [{"role": r, "content": c} for r, c in pairs]
    if style == 0:
        return json.dumps({"messages": messages}, ensure_ascii=False).encode()
    if style == 1:  # ASCII escapes, no spaces, reversed keys, extra fields
        reordered = [{"content": m["content"], "role": m["role"], "w": 1} for m in messages]
        return json.dumps({"id": 3, "messages": reordered}, ensure_ascii=True, separators=(",", ":")).encode()
    return json.dumps({"prompt": "p", "messages": messages}, indent=None, separators=(" , ", " : ")).encode()


@st.composite
def conversation(draw: st.DrawFn) -> list[tuple[str, str]]:
    content = st.text(min_size=1, max_size=12).filter(lambda s: not s.isspace())
    turns = draw(st.integers(1, 3))
    pairs = [("system", draw(content))] if draw(st.booleans()) else []
    for _ in range(turns):
        pairs += [("user", draw(content)), ("assistant", draw(content))]
    return pairs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conversation(), conversation(), st.integers(0, 2), st.integers(0, 2), st.booleans())
def test_duplicate_iff_same_messages_whatever_the_spelling(
    tmp_path: Path, a: list[tuple[str, str]], b: list[tuple[str, str]], sa: int, sb: int, same: bool
) -> None:
    if same:
        b = list(a)
    path = write(tmp_path, render(a, sa) + b"\n" + render(b, sb) + b"\n")
    report = validate_file(path, max_tokens=10**6)
    assert report.ok and report.examples == 2, report.errors
    assert report.duplicates == (a == b)
    assert (conversation_digest(a) == conversation_digest(b)) == (a == b)


def test_digest_memory_is_bounded_per_example(tmp_path: Path) -> None:
    n = 50_000
    lines = (
        json.dumps(
            {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        )
        for i in range(n)
    )
    path = write(tmp_path, ("\n".join(lines) + "\n").encode())
    gc.collect()
    tracemalloc.start()
    try:
        report = validate_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.examples == n and report.duplicates == 0
    # a few 1 MiB chunks, then per example a digest dict entry (~130 B) and a token count
    assert peak < 4 * MiB + 220 * n, f"{(peak - 4 * MiB) / n:.0f} B per example"


# --- train/validation overlap -----------------------------------------------------------------


def test_validate_pair_counts_overlap_on_the_validation_report(tmp_path: Path) -> None:
    a = conv(("user", "A?"), ("assistant", "A."))
    b = conv(("user", "B?"), ("assistant", "B."))
    c = conv(("system", "S"), ("user", "C?"), ("assistant", "C."))
    d = conv(("user", "D?"), ("assistant", "D."))
    b_other_spelling = (
        b'{"messages":[{"content":"B?","role":"user"},{"content":"B\\u002e","role":"assistant"}]}'
    )
    train = write(tmp_path, b"\n".join([a, b, c]) + b"\n", "train.jsonl")
    val = write(tmp_path, b"\n".join([b_other_spelling, d, a, d, a]) + b"\n", "val.jsonl")

    result = validate_pair(
        train, val, train_name="datasets/train.jsonl", validation_name="datasets/val.jsonl"
    )
    assert isinstance(result, PairReport)
    train_report, val_report, overlap = result
    assert overlap == val_report.overlap == 3
    assert train_report.ok and not train_report.warnings and train_report.overlap == 0
    assert val_report.ok and val_report.examples == 5 and val_report.duplicates == 2
    assert warned(val_report) == [
        (4, "messages", "duplicate of line 2: same messages (roles and contents)"),
        (5, "messages", "duplicate of line 3: same messages (roles and contents)"),
        (1, "messages", "same messages as line 2 of the training file datasets/train.jsonl (overlap)"),
        (3, "messages", "same messages as line 1 of the training file datasets/train.jsonl (overlap)"),
        (5, "messages", "same messages as line 1 of the training file datasets/train.jsonl (overlap)"),
    ]
    assert {w.file for w in val_report.warnings} == {"datasets/val.jsonl"}
    assert validate_file(val).overlap == 0  # alone, a file has nothing to overlap with


def test_overlap_is_capped_and_never_an_error(tmp_path: Path) -> None:
    train = write(tmp_path, GOOD + b"\n" + GOOD_SYS + b"\n", "train.jsonl")
    val = write(tmp_path, b"\n".join([GOOD_SYS] * 10) + b"\n", "val.jsonl")
    _, val_report, overlap = validate_pair(train, val, max_errors=3)
    assert overlap == 10 and val_report.ok and val_report.duplicates == 9
    overlaps = [w for w in val_report.warnings if "overlap" in w.message or "training file" in w.message]
    assert [w.line for w in overlaps] == [1, 2, 3, 0]
    assert overlaps[-1].message == "10 examples also in the training file in all; only the first 3 are listed"


def test_validate_pair_checks_each_file_with_min_examples_1(tmp_path: Path) -> None:
    train = write(tmp_path, GOOD + b"\n", "train.jsonl")
    val = write(tmp_path, b"[1]\n", "val.jsonl")
    train_report, val_report, overlap = validate_pair(train, val)
    assert train_report.ok and train_report.examples == 1
    assert where(val_report) == [(1, "")] and overlap == 0
    with pytest.raises(FileNotFoundError):
        validate_pair(train, tmp_path / "missing.jsonl")


def test_activity_reports_overlap_and_duplicates_but_accepts(azure, settings) -> None:
    from activities.dataset import validate_dataset
    from testing.fakes import ultrachat_lines as fake_lines

    train = azure.put_blob("datasets", "chats/train.jsonl", fake_lines(12))
    rows = fake_lines(12).splitlines()
    holdout = azure.put_blob("datasets", "chats/holdout.jsonl", b"\n".join([rows[4], rows[4]]) + b"\n")
    payload = {
        "instance_id": "ft-0123456789abcdef",
        "config": settings.run_config().model_dump(mode="json"),
        "dataset": train.model_dump(mode="json"),
        "validation": holdout.model_dump(mode="json"),
    }
    outcome = DatasetOutcome.model_validate(validate_dataset(payload))
    assert outcome.ok and (outcome.train_examples, outcome.validation_examples) == (12, 2)
    train_report, val_report = outcome.reports
    assert train_report.file == "datasets/chats/train.jsonl" and not train_report.warnings
    assert (val_report.overlap, val_report.duplicates) == (2, 1)
    assert [(w.line, w.message) for w in val_report.warnings] == [
        (2, "duplicate of line 1: same messages (roles and contents)"),
        (1, "same messages as line 5 of the training file datasets/chats/train.jsonl (overlap)"),
        (2, "same messages as line 5 of the training file datasets/chats/train.jsonl (overlap)"),
    ]


def test_activity_split_path_warns_about_duplicates_and_splits_all(azure, settings) -> None:
    from activities.dataset import validate_dataset
    from testing.fakes import ultrachat_lines as fake_lines

    lines = fake_lines(10) + fake_lines(10)  # every example twice
    dataset = azure.put_blob("datasets", "chats/twice.jsonl", lines)
    payload = {
        "instance_id": "ft-0123456789abcdef",
        "config": settings.run_config().model_dump(mode="json"),
        "dataset": dataset.model_dump(mode="json"),
    }
    outcome = DatasetOutcome.model_validate(validate_dataset(payload))
    assert outcome.ok and outcome.train_examples + outcome.validation_examples == 20
    [report] = outcome.reports
    assert report.duplicates == 10 and report.overlap == 0
    assert [w.line for w in report.warnings] == list(range(11, 21))


# --- exact token counts with a tokenizer --------------------------------------------------------

SPECIAL = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def tiny_tokenizer(path: Path, *, bos: bool = False) -> Path:
    """A byte-level BPE trained on a few strings, with Phi-3's chat tokens (and optionally a
    post-processor adding a BOS token, like Llama-family tokenizers do)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[*SPECIAL, "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["What is 2+2? 2+2 is 4.", "Name a colour. Blue.", "You are terse.", "aaaa " * 50]
    tok.train_from_iterator(corpus * 20, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def phi3(pairs: list[tuple[str, str]]) -> str:
    text = ""
    for role, content in pairs:
        text += "<|" + role + "|>\n" + content + "<|end|>\n"
    return text + "<|endoftext|>"


CONVERSATIONS = [
    [("user", "What is 2+2?"), ("assistant", "2+2 is 4.")],
    [("system", "You are terse."), ("user", "Name a colour."), ("assistant", "Blue.")],
    [("user", "Ça va? 😀 " * 5), ("assistant", "Oui\nmerci\n\n" * 3), ("user", "x"), ("assistant", "y")],
]


@pytest.mark.parametrize("bos", [False, True])
def test_tokenizer_gives_exact_counts(tmp_path: Path, bos: bool) -> None:
    from tokenizers import Tokenizer

    tok_path = tiny_tokenizer(tmp_path / "tok" / "tokenizer.json", bos=bos)
    tok = Tokenizer.from_file(str(tok_path))
    assert [len(tok.encode(t, add_special_tokens=False).ids) for t in SPECIAL] == [1] * 5
    expected = [len(tok.encode(phi3(pairs)).ids) for pairs in CONVERSATIONS]
    if bos:
        assert expected == [len(tok.encode(phi3(p), add_special_tokens=False).ids) + 1 for p in CONVERSATIONS]
    assert [phi3(p) for p in CONVERSATIONS] == [chat_text(p) for p in CONVERSATIONS]

    path = write(tmp_path, b"\n".join(conv(*pairs) for pairs in CONVERSATIONS) + b"\n")
    for given_path in (tok_path, tok_path.parent, str(tok_path)):  # file or directory, str or Path
        report = validate_file(path, tokenizer=given_path)
        assert report.ok, report.errors
        assert report.token_method == f"tokenizer:{given_path}"
        ordered = sorted(expected)
        assert report.tokens.total == sum(expected)
        assert report.tokens.max == max(expected)
        assert report.tokens.max_line == expected.index(max(expected)) + 1
        assert report.tokens.p50 == ordered[math.ceil(0.5 * 3) - 1]
        assert report.tokens.p95 == ordered[-1]
    assert validate_file(path).token_method == "estimate"


def test_tokenizer_limit_uses_the_exact_count_not_the_estimate(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    tok_path = tiny_tokenizer(tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(str(tok_path))
    runs = [("user", "aaaa " * 50), ("assistant", "aaaa " * 40)]  # merged into few tokens
    exact = len(tok.encode(phi3(runs)).ids)
    estimate = estimate_tokens(runs)
    assert exact < estimate
    path = write(tmp_path, b"\n".join([GOOD, conv(*runs), GOOD_SYS]) + b"\n")

    assert not validate_file(path, max_tokens=exact).ok  # the estimate alone would fail it
    report = validate_file(path, max_tokens=exact, tokenizer=tok_path)
    assert report.ok and report.tokens.max == exact and report.tokens.max_line == 2

    report = validate_file(path, max_tokens=exact - 1, tokenizer=tok_path)
    assert where(report) == [(2, "messages")]
    assert report.errors[0].message == (
        f"conversation is {exact} tokens (tokenizer:{tok_path}); limit is {exact - 1}"
    )
    assert report.examples == 2 and report.duplicates == 0


def test_tokenizer_in_validate_pair(tmp_path: Path) -> None:
    tok_path = tiny_tokenizer(tmp_path / "tokenizer.json")
    train = write(tmp_path, GOOD + b"\n" + GOOD_SYS + b"\n", "train.jsonl")
    val = write(tmp_path, GOOD + b"\n", "val.jsonl")
    train_report, val_report, overlap = validate_pair(train, val, tokenizer=tok_path)
    assert train_report.token_method == val_report.token_method == f"tokenizer:{tok_path}"
    assert overlap == 1


def test_bad_tokenizer_paths(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + b"\n" + GOOD_SYS + b"\n")
    with pytest.raises(FileNotFoundError):
        validate_file(path, tokenizer=tmp_path / "nope.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "empty")  # a directory without tokenizer.json
    with pytest.raises(ValueError, match=r"not a tokenizer\.json"):
        validate_file(path, tokenizer=path)


# --- summary fields ---------------------------------------------------------------------------


def test_summary_longest_line_turns_and_roles(tmp_path: Path) -> None:
    three = conv(
        ("user", "1"),
        ("assistant", "1"),
        ("user", "2"),
        ("assistant", "2"),
        ("user", "3"),
        ("assistant", "3"),
    )
    long = conv(("system", "s"), ("user", "q" * 500), ("assistant", "a"))
    lines = [GOOD, b"", three, long, b'{"messages": "' + b"x" * 700 + b'"}', GOOD_SYS]
    report = validate_file(write(tmp_path, b"\n".join(lines) + b"\n"))
    assert report.error_count == 1 and report.examples == 4
    assert (report.longest_line, report.longest_line_bytes) == (5, len(lines[4]))  # errors count too
    assert report.turns == {1: 3, 3: 1}
    assert report.role_counts == {"system": 2, "user": 6, "assistant": 6}
    assert report.tokens.max_line == 4
    assert report.token_method == "estimate" and report.duplicates == report.overlap == 0
    # JSON round trip (the activity's outcome travels as JSON): histogram keys come back as ints
    assert ValidationReport.model_validate_json(report.model_dump_json()) == report


def test_longest_line_counts_skipped_over_long_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checker, "MAX_LINE_BYTES", 300)
    monkeypatch.setattr(reading, "_CHUNK", 64)
    data = b"\n".join([GOOD, b"q" * 1000 + b"\r", b"w" * 400, GOOD_SYS]) + b"\n"
    report = validate_file(write(tmp_path, data))
    assert where(report) == [(2, ""), (3, "")]
    assert (report.longest_line, report.longest_line_bytes) == (2, 1000)


def test_empty_and_gzip_reports_have_empty_summaries() -> None:
    for name in ("empty.jsonl", "gzip_named.jsonl"):
        report = validate_file(BAD / name)
        assert (report.longest_line, report.turns, report.duplicates) == (0, {}, 0)


# --- duplicates and overlap against a plain reference, across chunk sizes ---------------------

# Contents of equal length, so that different conversations share a fingerprint (the lengths)
# and the full digests have to decide; "é" and "\u00e9" spellings are produced by render().
POOL = ["ab", "cd", "é!", "xy ", "Hi", "ok."]


@st.composite
def small_conversation(draw: st.DrawFn) -> list[tuple[str, str]]:
    content = st.sampled_from(POOL)
    pairs = [("system", draw(content))] if draw(st.integers(0, 3)) == 0 else []
    for _ in range(draw(st.integers(1, 2))):
        pairs += [("user", draw(content)), ("assistant", draw(content))]
    return pairs


@st.composite
def jsonl_file(draw: st.DrawFn) -> tuple[bytes, list[list[tuple[str, str]] | None]]:
    """File bytes and, per physical line, its conversation (None: blank or invalid line)."""
    rows: list[list[tuple[str, str]] | None] = []
    lines: list[bytes] = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(st.sampled_from([b"", b"  ", b"\t"])))
            rows.append(None)
        elif kind == 1:
            lines.append(conv(("user", "no reply")))
            rows.append(None)
        else:
            pairs = draw(small_conversation())
            lines.append(render(pairs, draw(st.integers(0, 2))))
            rows.append(pairs)
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = ending.join(lines) + draw(st.sampled_from([ending, b""]))
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, rows


def first_lines(rows: list[list[tuple[str, str]] | None]) -> dict[tuple[tuple[str, str], ...], int]:
    firsts: dict[tuple[tuple[str, str], ...], int] = {}
    for lineno, pairs in enumerate(rows, 1):
        if pairs is not None:
            firsts.setdefault(tuple(pairs), lineno)
    return firsts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jsonl_file(), jsonl_file(), st.sampled_from([1, 3, 17, 64, 1 << 20]))
def test_duplicates_and_overlap_match_a_plain_reference(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    train_file: tuple[bytes, list[list[tuple[str, str]] | None]],
    val_file: tuple[bytes, list[list[tuple[str, str]] | None]],
    chunk: int,
) -> None:
    monkeypatch.setattr(reading, "_CHUNK", chunk)
    (train_data, train_rows), (val_data, val_rows) = train_file, val_file
    train = write(tmp_path, train_data, "train.jsonl")
    val = write(tmp_path, val_data, "val.jsonl")
    train_report, val_report, overlap = validate_pair(train, val, max_errors=1000, max_tokens=10**6)

    def expected_duplicates(rows: list[list[tuple[str, str]] | None]) -> list[tuple[int, int]]:
        firsts = first_lines(rows)
        return [
            (n, firsts[tuple(p)]) for n, p in enumerate(rows, 1) if p is not None and firsts[tuple(p)] != n
        ]

    def reported(report: ValidationReport, text: str) -> list[tuple[int, int]]:
        return [
            (w.line, int(w.message.split("line ")[1].split(" ")[0].rstrip(":")))
            for w in report.warnings
            if w.message.startswith(text)
        ]

    assert reported(train_report, "duplicate of") == expected_duplicates(train_rows)
    assert reported(val_report, "duplicate of") == expected_duplicates(val_rows)
    in_train = first_lines(train_rows)
    expected_overlap = [
        (n, in_train[tuple(p)]) for n, p in enumerate(val_rows, 1) if p is not None and tuple(p) in in_train
    ]
    assert reported(val_report, "same messages as") == expected_overlap
    assert overlap == val_report.overlap == len(expected_overlap)
    assert train_report.duplicates == len(expected_duplicates(train_rows))


def test_same_lengths_different_contents_are_not_duplicates(tmp_path: Path) -> None:
    lines = [conv(("user", a), ("assistant", b)) for a in ("ab", "cd", "ef") for b in ("xy", "zw")]
    report = validate_file(write(tmp_path, b"\n".join(lines) + b"\n"))
    assert report.ok and report.examples == 6 and report.duplicates == 0 and not report.warnings


def test_training_file_changed_before_read_back_is_no_match(tmp_path: Path) -> None:
    """Examples are read back by offset only on a shared fingerprint; if that fails, no warning."""
    train = write(tmp_path, GOOD + b"\n" + GOOD_SYS + b"\n", "train.jsonl")
    val = write(tmp_path, GOOD + b"\n", "val.jsonl")
    limits = {"max_tokens": 4096, "max_errors": 50, "min_examples": 1}
    _, index = checker._validate(train, "train.jsonl", **limits)
    train.write_bytes(b"[not json any more]\n" * 3)
    report, val_index = checker._validate(val, "val.jsonl", against=index, **limits)
    index.close()
    val_index.close()
    assert report.ok and report.overlap == 0 and not report.warnings
    train.unlink()  # unreadable altogether: still no crash
    _, index = checker._validate(val, "train.jsonl", **limits)
    (tmp_path / "val.jsonl").unlink()
    report, _ = checker._validate(write(tmp_path, GOOD + b"\n", "v2.jsonl"), "v2", against=index, **limits)
    assert report.ok and report.overlap == 0


def test_turns_histogram_grows_for_long_conversations(tmp_path: Path) -> None:
    long = conv(*[(role, f"{role} {i}") for i in range(20) for role in ("user", "assistant")])
    report = validate_file(write(tmp_path, GOOD + b"\n" + long + b"\n"), max_tokens=10**6)
    assert report.ok and report.turns == {1: 1, 20: 1}


def test_checksum_is_off_unless_asked(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + b"\n" + GOOD_SYS + b"\n")
    assert validate_file(path).sha256 == ""
    assert validate_file(path, checksum=True).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# --- validation of a download as it arrives (validate_stream) ---------------------------------


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (any order, repeats and out-of-range ones ignored)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def streamed(chunks: list[bytes], dest: Path, **options: object) -> ValidationReport:
    from core.validation import validate_stream

    return validate_stream(iter(chunks), dest, display_name="datasets/x.jsonl", **options)  # type: ignore[arg-type]


def stream_corpus() -> list[tuple[str, bytes]]:
    valid = ultrachat_lines(120)
    big = b"\n".join([*valid, valid[7], b"", valid[3] + b"\r", *valid[:5]]) + b"\n"  # duplicates too
    return [(p.name, p.read_bytes()) for p in sorted(BAD.iterdir())] + [("generated_valid", big)]


STREAM_CORPUS = stream_corpus()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("name", [name for name, _ in STREAM_CORPUS])
def test_stream_gives_the_report_of_the_finished_file(tmp_path: Path, name: str, data: st.DataObject) -> None:
    raw = dict(STREAM_CORPUS)[name]
    path = write(tmp_path, raw, "whole.jsonl")
    cuts = data.draw(st.lists(st.integers(0, max(len(raw), 1)), max_size=40), label="cuts")
    checksum = data.draw(st.booleans(), label="checksum")
    options = {"max_errors": 3, "checksum": checksum, "min_examples": 2}
    expected = validate_file(path, display_name="datasets/x.jsonl", **options)  # type: ignore[arg-type]
    dest = tmp_path / "streamed.jsonl"
    before = threading.active_count()
    got = streamed(cut(raw, cuts), dest, **options)
    assert got == expected
    assert threading.active_count() == before
    if checksum or reading.sniff_format(raw[:4]) is None:
        assert dest.read_bytes() == raw  # the tee wrote every byte


def test_stream_of_a_generated_valid_file_in_network_sized_chunks(tmp_path: Path) -> None:
    lines = ultrachat_lines(3000)
    raw = b"\n".join([*lines, *lines[:50]]) + b"\n"  # 50 duplicates read back from the written file
    expected = validate_file(write(tmp_path, raw), display_name="datasets/x.jsonl", checksum=True)
    assert expected.ok and expected.duplicates == 50 and len(raw) > 2 * MiB
    chunks = [raw[i : i + 1_000_003] for i in range(0, len(raw), 1_000_003)]
    dest = tmp_path / "streamed.jsonl"
    assert streamed(chunks, dest, checksum=True) == expected
    assert dest.read_bytes() == raw


def test_stream_error_is_raised_and_the_partial_file_removed(tmp_path: Path) -> None:
    from storage.errors import BlobChangedError

    def chunks():
        yield GOOD + b"\n"
        yield GOOD_SYS
        raise BlobChangedError(
            "datasets/x.jsonl changed", container="datasets", name="x.jsonl", status_code=412
        )

    dest = tmp_path / "streamed.jsonl"
    before = threading.active_count()
    with pytest.raises(BlobChangedError, match="changed"):
        from core.validation import validate_stream

        validate_stream(chunks(), dest)
    assert not dest.exists()
    assert threading.active_count() == before


def test_stream_stops_reading_once_the_format_decides(tmp_path: Path) -> None:
    """A gzip upload fails on its first bytes: the rest is not downloaded (the helper pulls at
    most a queue's worth ahead), and the source is closed."""
    pulled = 0
    closed = False

    def endless():
        nonlocal pulled, closed
        try:
            yield b"\x1f\x8b\x08\x00" + b"\x00" * 1000
            while True:
                pulled += 1
                yield b"\x00" * 1000
        finally:
            closed = True

    from core.validation import validate_stream

    report = validate_stream(endless(), tmp_path / "x.jsonl", depth=2)
    assert where(report) == [(0, "")] and "gzip" in report.errors[0].message
    assert closed and pulled <= 2 + 2


def test_stream_memory_is_bounded_by_the_queue(tmp_path: Path) -> None:
    """A fast source and a validator that cannot keep up: the helper waits for room instead of
    buffering the whole download."""
    from core.validation import validate_stream

    one = GOOD + b"\n"
    chunk = one * (MiB // len(one))
    ahead: list[int] = []
    state = {"pulled": 0, "consumed": 0}
    original = reading.StreamTee.read

    def slow_read(self: reading.StreamTee) -> bytes | bytearray:
        got = original(self)
        state["consumed"] += 1
        ahead.append(state["pulled"] - state["consumed"])
        return got

    def source():
        for _ in range(20):
            state["pulled"] += 1
            yield chunk

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reading.StreamTee, "read", slow_read)
        report = validate_stream(source(), tmp_path / "x.jsonl", depth=2)
    assert report.ok and report.examples == 20 * (MiB // len(one))
    assert max(ahead) <= 2 + 1  # queued + the one the helper holds while waiting for room


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, 1700), max_size=30), terminator=st.sampled_from([b"\n", b"\r\n", b""]))
def test_stream_skips_over_long_lines_like_the_file_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuts: list[int], terminator: bytes
) -> None:
    monkeypatch.setattr(checker, "MAX_LINE_BYTES", 200)
    ok_long = conv(("user", "x" * 75), ("assistant", "y" * 40))
    long = b"q" * 201
    raw = b"\n".join([GOOD, long, ok_long, b"w" * 500, GOOD_SYS, long + b"\r", b"  ", GOOD]) + terminator
    expected = validate_file(write(tmp_path, raw), display_name="datasets/x.jsonl")
    assert expected.error_count == 3
    assert streamed(cut(raw, cuts), tmp_path / "streamed.jsonl") == expected


def test_split_in_one_pass_with_the_known_count_gives_the_same_files(tmp_path: Path) -> None:
    from core.splitting import split_file

    lines = ultrachat_lines(57)
    raw = b"\xef\xbb\xbf" + b"\n".join([*lines[:20], b"", b" \r", *lines[20:]]) + b"\r"
    path = write(tmp_path, raw)
    two = split_file(path, tmp_path / "t2", tmp_path / "v2", fraction=0.2, seed=7)
    report = validate_file(path)
    assert report.ok and report.examples == 57
    one = split_file(path, tmp_path / "t1", tmp_path / "v1", fraction=0.2, seed=7, examples=report.examples)
    assert one == two == (46, 11)
    assert (tmp_path / "t1").read_bytes() == (tmp_path / "t2").read_bytes()
    assert (tmp_path / "v1").read_bytes() == (tmp_path / "v2").read_bytes()
    with pytest.raises(OSError, match="changed while it was being split"):
        split_file(path, tmp_path / "t3", tmp_path / "v3", examples=58)


def test_activity_streams_and_reports_a_blob_overwritten_mid_download(
    azure, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from activities.dataset import validate_dataset
    from storage.errors import BlobChangedError
    from testing.fakes import ultrachat_lines as fake_lines

    dataset = azure.put_blob("datasets", "chats/moving.jsonl", fake_lines(200))
    payload = {
        "instance_id": "ft-0123456789abcdef",
        "config": settings.run_config().model_dump(mode="json"),
        "dataset": dataset.model_dump(mode="json"),
    }
    opened = azure.open_stream

    def overwritten(blob):
        chunks = opened(blob)
        yield next(chunks)
        raise BlobChangedError("changed", container=blob.container, name=blob.name, status_code=412)

    monkeypatch.setattr(azure, "open_stream", overwritten)
    outcome = DatasetOutcome.model_validate(validate_dataset(payload))
    assert not outcome.ok
    [report] = outcome.reports
    assert report.errors[0].message.startswith("blob was overwritten after this run started")
    assert azure.count("upload") == 0
