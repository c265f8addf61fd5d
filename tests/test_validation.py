"""core.validation: exact line/field for every rule, warnings, bounded memory, properties."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import re
import threading
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core.validation as validation
from core.models import ValidationReport
from core.validation import MAX_LINE_BYTES, estimate_tokens, validate_file

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
    tolerated = {"bom.jsonl", "crlf.jsonl", "blank_lines.jsonl", "extra_fields.jsonl"}
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
    report = validate_file(path)
    assert report.error_count == 1 and report.lines == 0 and report.examples == 0
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_empty_file(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, b""))
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
    report = validate_file(write(tmp_path, data), display_name="datasets/chat.jsonl")
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
    monkeypatch.setattr(validation, "_CHUNK", 64)
    data = b"\n".join(ultrachat_lines(50)) + b"\n"
    before = threading.active_count()
    report = validate_file(write(tmp_path, data))
    assert report.ok and report.sha256 == hashlib.sha256(data).hexdigest()
    assert threading.active_count() == before


def test_no_trailing_newline_still_counts_last_line(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, GOOD + b"\n" + GOOD_SYS))
    assert report.ok and report.lines == 2 and report.examples == 2


def test_percentiles_nearest_rank() -> None:
    assert validation._percentile([1, 2, 3, 4], 50) == 2
    assert validation._percentile([1, 2, 3, 4], 95) == 4
    assert validation._percentile([7], 95) == 7
    assert validation._percentile(list(range(1, 101)), 95) == 95


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_tiny_chunks_give_the_same_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    lines = [*ultrachat_lines(30), b"", b"  ", conv(("user", "Hi")), b"[1]", GOOD + b"\r"]
    data = b"\xef\xbb\xbf" + b"\n".join(lines)  # BOM, CRLF on the last line, no final newline
    path = write(tmp_path, data)
    expected = validate_file(path)
    monkeypatch.setattr(validation, "_CHUNK", chunk)
    assert validate_file(path) == expected
    assert where(expected) == [(33, "messages"), (34, "")]
    assert expected.examples == 31 and expected.lines == 35
    assert expected.sha256 == hashlib.sha256(data).hexdigest()


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
        report = validate_file(path)
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
    monkeypatch.setattr(validation, "_CHUNK", chunk)
    monkeypatch.setattr(validation, "MAX_LINE_BYTES", 200)
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
    messages = [validation._Message(role=r, content=c) for r, c in pairs]  # type: ignore[arg-type]
    fast = validation._passes(messages, max_tokens)
    problems, tokens, n_system, n_user, n_assistant = validation._check_conversation(messages, max_tokens)
    if fast is None:
        assert problems
    else:
        assert problems is None
        assert fast == (tokens, n_system, n_user, n_assistant)
        assert tokens == estimate_tokens(pairs)


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
    monkeypatch.setattr(validation, "_CHUNK", chunk)
    data = GOOD + b"\n" + middle + b"\n" + GOOD_SYS + b"\n"
    path = write(tmp_path, data)
    report = validate_file(path, max_errors=5)

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
