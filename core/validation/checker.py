"""Checking files: :func:`validate_file`, :func:`validate_stream`, :func:`validate_pair`, and the
loop over lines they share.

The loop (:func:`_validate`) is the hot path and is kept in one function: per line it finds the
newline, decodes the line with the strict typed decoder and runs :func:`passes`; everything else
(blank, over-long and CRLF lines, duplicates, statistics) costs the common line little or nothing.

* Fast path: the strict decoder knows every ultrachat field and forbids others, so its success
  also proves the line is valid UTF-8; lines with extra fields are decoded again with unknown
  fields skipped after an explicit UTF-8 check (after 16 such lines that becomes the first choice
  for the rest of the file).
* Slow path, only for lines the decoders reject: :func:`diagnose` says which field is wrong and
  how; for lines that decode but break a rule, :func:`check_conversation` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

from msgspec import structs

from core.models import ValidationIssue, ValidationReport
from core.validation.diagnosis import diagnose
from core.validation.duplicates import ExampleIndex, Repeats, content_fingerprint
from core.validation.reading import (
    BOM,
    MAX_LINE_BYTES,
    TEE_QUEUE,
    ChunkReader,
    NoChecksum,
    Sha256,
    StreamTee,
    count_crlf,
    sniff_format,
)
from core.validation.report import Collector, build_report, token_stats
from core.validation.rules import check_conversation, count_roles, passes
from core.validation.schema import DECODE_ERRORS, STRICT, Line, decode_relaxed
from core.validation.tokens import NO_LIMIT, TokenCounter, tokenizer_option

MIN_EXAMPLES = 2
"""A dataset needs at least one training and one validation example."""

_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")
_RELAX_AFTER = 16  # lines with extra fields before the relaxed decoder becomes the first choice
_Segment = tuple[bytes | bytearray, int, int]  # (buffer, start, file offset of buffer[0])


class PairReport(NamedTuple):
    """Result of :func:`validate_pair`; unpacks as ``train, validation, overlap``."""

    train: ValidationReport
    validation: ValidationReport
    overlap: int  # validation examples whose messages also appear in train (= validation.overlap)


def validate_file(
    path: Path,
    *,
    display_name: str | None = None,
    max_tokens: int = 4096,
    max_errors: int = 50,
    min_examples: int = MIN_EXAMPLES,
    tokenizer: str | os.PathLike[str] | None = None,
    checksum: bool = False,
) -> ValidationReport:
    """Check one chat JSONL file and return a report; never raises for bad content.

    ``display_name`` (default: the file name) goes into the report and every issue.
    ``max_tokens`` is the per-conversation limit; ``max_errors`` caps the number of issues kept
    in ``errors`` while ``error_count`` counts all of them (duplicate warnings are capped at the
    same number, ``duplicates`` counts all). ``min_examples`` (default 2, enough to split
    train/validation) may be lowered to 1 for a separately supplied validation file.
    Line numbers are physical, 1-based lines split on ``\n`` (blank lines count).

    Tokens are the :func:`estimate_tokens` upper bound unless ``tokenizer`` names a
    ``tokenizer.json`` (or a directory holding one): then every valid conversation is formatted
    with :func:`chat_text` and encoded, which is exact but much slower: the tokenizer runs per
    line in this thread, a few MB/s instead of hundreds (3.5 MB/s measured with a small
    byte-level BPE on 2 cores). ``token_method`` in the report says which was used.

    The file is read in 1 MiB chunks; memory stays below a few chunks plus one line of at most
    :data:`MAX_LINE_BYTES`, plus per valid example its duplicate-detection entry (about 160
    bytes, measured: ~16 MB per 100k examples) and its token count (about 40 bytes).
    ``checksum=True`` also puts the file's SHA-256 in ``sha256`` (otherwise "").

    Raises:
        OSError: ``path`` (or ``tokenizer``) cannot be opened or read (missing, a directory, no
            permission...).
        ValueError: ``tokenizer`` is not a loadable tokenizer.json.
    """
    counter, method = tokenizer_option(tokenizer)
    report, index = _validate(
        path,
        display_name if display_name is not None else path.name,
        max_tokens=max_tokens,
        max_errors=max_errors,
        min_examples=min_examples,
        counter=counter,
        token_method=method,
        checksum=checksum,
    )
    index.close()
    return report


def validate_stream(
    chunks: Iterable[bytes | bytearray],
    path: Path,
    *,
    display_name: str | None = None,
    max_tokens: int = 4096,
    max_errors: int = 50,
    min_examples: int = MIN_EXAMPLES,
    tokenizer: str | os.PathLike[str] | None = None,
    checksum: bool = False,
    depth: int = TEE_QUEUE,
) -> ValidationReport:
    """Validate the bytes of ``chunks`` (a download, say) while writing them to ``path``.

    The report is the one :func:`validate_file` gives for the finished file (same verdict,
    issues, line numbers and summary, ``sha256`` included), wherever the chunk boundaries fall,
    but it is ready as soon as the last chunk has arrived: a helper thread pulls the chunks,
    writes each to ``path`` and queues it (at most ``depth`` waiting; memory ``depth + 2``
    chunks) for the validator, which runs in this thread (:class:`~core.validation.reading.
    StreamTee`). Arguments as for :func:`validate_file`; ``display_name`` defaults to the name of
    ``path``.

    When the report is returned, ``path`` holds all of ``chunks``, except when the first bytes
    already decided (a gzip, zip or UTF-16 file without ``checksum``): then reading stopped there
    and ``path`` holds only a prefix, which a failed report never needs.

    Raises:
        whatever iterating ``chunks`` raises (re-raised here, after the helper has stopped;
            ``path`` is then removed), ``OSError`` if ``path`` cannot be written, and as
            :func:`validate_file` for ``tokenizer``.
    """
    counter, method = tokenizer_option(tokenizer)
    try:
        with StreamTee(chunks, path, depth=depth) as tee:
            report, index = _validate(
                path,
                display_name if display_name is not None else path.name,
                max_tokens=max_tokens,
                max_errors=max_errors,
                min_examples=min_examples,
                counter=counter,
                token_method=method,
                checksum=checksum,
                source=tee.read,
            )
            index.close()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return report


def validate_pair(
    train: Path,
    validation: Path,
    *,
    train_name: str | None = None,
    validation_name: str | None = None,
    max_tokens: int = 4096,
    max_errors: int = 50,
    min_examples: int = 1,
    tokenizer: str | os.PathLike[str] | None = None,
    checksum: bool = False,
) -> PairReport:
    """Validate a training file and a separately supplied validation file, and find overlap.

    Both are checked as by :func:`validate_file` (``min_examples`` applies to each; default 1).
    Every valid validation example whose messages (same digest as for duplicates) also appear in
    the training file is an overlap: a warning on the validation report naming the training
    line (capped at ``max_errors``, ``overlap`` counts all). Overlap never makes a report fail.
    The training file's index (about 160 bytes per example) is held while the validation file is
    read, and training examples may be read back from ``train`` then.

    Raises:
        OSError / ValueError: as :func:`validate_file`.
    """
    counter, method = tokenizer_option(tokenizer)
    common: dict[str, Any] = {
        "max_tokens": max_tokens,
        "max_errors": max_errors,
        "min_examples": min_examples,
        "counter": counter,
        "token_method": method,
        "checksum": checksum,
    }
    train_label = train_name if train_name is not None else train.name
    train_report, train_index = _validate(train, train_label, **common)
    try:
        val_report, val_index = _validate(
            validation,
            validation_name if validation_name is not None else validation.name,
            against=train_index,
            against_name=train_label,
            **common,
        )
        val_index.close()
    finally:
        train_index.close()
    return PairReport(train_report, val_report, val_report.overlap)


def _validate(
    path: Path,
    name: str,
    *,
    max_tokens: int,
    max_errors: int,
    min_examples: int,
    counter: TokenCounter | None = None,
    token_method: str = "estimate",
    against: ExampleIndex | None = None,
    against_name: str = "",
    checksum: bool = False,
    source: Callable[[], bytes | bytearray] | None = None,
) -> tuple[ValidationReport, ExampleIndex]:
    """The validator; also returns the index of the file's valid examples (the caller closes it;
    it is open only if examples had to be read back).

    The bytes come from ``path`` in :data:`~core.validation.reading._CHUNK`-byte reads, or from
    ``source`` (chunks of any size, ``b""`` at the end, never an empty one before) when given:
    then ``path`` must hold every byte ``source`` has returned so far (examples are read back
    from it by offset)."""
    errs = Collector(name, max_errors)
    add = errs.add
    warnings: list[ValidationIssue] = []
    decode: Callable[[memoryview], Line] = STRICT.decode
    limit = MAX_LINE_BYTES
    whitespace = _WHITESPACE

    lineno = relaxed = 0
    blank_count = first_blank = crlf_count = first_crlf = 0
    longest = longest_line = 0
    token_counts: list[int] = []  # one per valid example
    append_tokens = token_counts.append
    fast_check = passes
    shapes = [0] * 64  # valid examples by shape (see passes; grown if needed)
    estimate_limit = max_tokens if counter is None else NO_LIMIT
    # Duplicates: a fingerprint per valid example, full digests only on a shared fingerprint
    # (see conversation_digest). `index` is the valid example's ordinal.
    seen = ExampleIndex(path)
    first_seen = seen.fingerprints.setdefault
    same_digest = seen.digests.setdefault
    seen_lines = seen.lines
    add_line = seen_lines.append
    add_offset = seen.offsets.append
    astuple = structs.astuple
    index = 0
    repeats = Repeats(name, max_errors, "duplicate of line ", ": same messages (roles and contents)")
    overlaps = Repeats(
        name, max_errors, "same messages as line ", f" of the training file {against_name} (overlap)"
    )
    in_train = against.fingerprints if against is not None else None
    pos_in_file = 0  # file offset of chunk[0]

    with ExitStack() as stack:
        read: Callable[[], bytes | bytearray]
        if source is None:
            read = ChunkReader(stack.enter_context(open(path, "rb", buffering=0))).read
        else:
            read = source
        hasher: Sha256 | NoChecksum = Sha256() if checksum else NoChecksum()
        stack.enter_context(hasher)
        update = hasher.update
        chunk: bytes | bytearray = read()
        while 0 < len(chunk) < 4 and (more := read()):  # enough bytes to sniff the format
            chunk = bytes(chunk) + more
        update(chunk)
        fatal = sniff_format(chunk)
        if fatal is not None:
            while checksum and (chunk := read()):
                update(chunk)
            add(0, "", fatal)
            sha256 = hasher.hexdigest()
            return build_report(name, errs, warnings, 0, 0, sha256, token_method=token_method), seen
        if chunk.startswith(BOM):
            chunk = chunk[len(BOM) :]
            pos_in_file = len(BOM)
            warnings.append(
                ValidationIssue(
                    line=1,
                    field="",
                    message="file starts with a UTF-8 byte-order mark (BOM); ignored",
                    file=name,
                )
            )

        carry: bytes | bytearray = b""  # start of a line that continues in the next chunk
        skipped = -1  # >= 0 while streaming past an over-long line: its length so far
        skipped_cr = False
        at_eof = False
        while True:
            # Cut the chunk into segments holding whole lines only: the line continued from the
            # previous chunk (a small copy), then the rest of the chunk in place.
            segments: list[_Segment] = []
            if not chunk:  # end of file
                if skipped >= 0:  # a final "\r" counts as a terminator, as for any last line
                    lineno += 1
                    size = skipped - skipped_cr
                    add(lineno, "", f"line is {size} bytes; limit 8 MiB")
                    if size > longest:
                        longest, longest_line = size, lineno
                    break
                if not carry:
                    break
                at_eof = True  # the last line has no newline (the hash has the real bytes)
                segments.append((carry + b"\n", 0, pos_in_file - len(carry)))
            else:
                nl = chunk.find(b"\n")
                if nl < 0 and (skipped >= 0 or len(carry) + len(chunk) > limit + 1):
                    # a line longer than the limit even if it ends in "\r": stream past it
                    skipped = (skipped if skipped >= 0 else len(carry)) + len(chunk)
                    skipped_cr = chunk[-1] == 13
                    carry = b""
                elif nl < 0:
                    carry += chunk
                elif skipped >= 0:
                    ends_cr = chunk[nl - 1] == 13 if nl else skipped_cr
                    lineno += 1
                    size = skipped + nl - ends_cr
                    add(lineno, "", f"line is {size} bytes; limit 8 MiB")
                    if size > longest:
                        longest, longest_line = size, lineno
                    skipped = -1
                    segments.append((chunk, nl + 1, pos_in_file))
                elif carry:
                    segments.append((carry + chunk[: nl + 1], 0, pos_in_file - len(carry)))
                    segments.append((chunk, nl + 1, pos_in_file))
                    carry = b""
                else:
                    segments.append((chunk, 0, pos_in_file))

            for buf, pos, buf_offset in segments:
                view = memoryview(buf)
                find = buf.find
                # CRLF endings are looked for per segment: one memchr for "\r" (0.01 s per 500
                # MB), and only if there is one, a count. The line loop leaves a line's "\r" to
                # the decoder, for which it is trailing whitespace.
                last = buf.rfind(b"\n") + 1
                if (cr := buf.find(b"\r", pos, last)) >= 0 and (crlf := count_crlf(buf, cr, last)):
                    if not first_crlf:
                        first_crlf = lineno + buf.count(b"\n", pos, buf.find(b"\r\n", pos)) + 1
                    crlf_count += crlf
                # Only a line longer than `watch` needs its exact length (without the "\r")
                # looked at: it may be the longest so far, or over the limit.
                watch = min(longest, limit)
                while (nl := find(b"\n", pos)) >= 0:
                    start = pos
                    pos = nl + 1
                    lineno += 1
                    if nl - start > watch:
                        end = nl - 1 if buf[nl - 1] == 13 else nl
                        if end == start or (buf[start] in whitespace and buf[start:end].isspace()):
                            blank_count += 1
                            if not first_blank:
                                first_blank = lineno
                            continue
                        if end - start > longest:
                            longest, longest_line = end - start, lineno
                            watch = min(longest, limit)
                        if end - start > limit:
                            add(lineno, "", f"line is {end - start} bytes; limit 8 MiB")
                            continue
                    try:
                        record = decode(view[start:nl])
                    except DECODE_ERRORS:
                        # Blank lines are found here, as lines that do not decode: the common
                        # line pays nothing for the check.
                        if nl == start or buf[start:nl].isspace():
                            blank_count += 1
                            if not first_blank:
                                first_blank = lineno
                            continue
                        line = view[start : nl - 1 if buf[nl - 1] == 13 else nl]
                        try:  # the strict decoder also rejects lines that merely have extra fields
                            record = decode_relaxed(line)
                        except DECODE_ERRORS as exc:
                            for field, message in diagnose(bytes(line), exc, unterminated=at_eof):
                                add(lineno, field, message)
                            continue
                        relaxed += 1
                        if relaxed == _RELAX_AFTER:
                            decode = decode_relaxed

                    messages = record.messages
                    passed = fast_check(messages, estimate_limit)
                    if passed is None:  # something is wrong: find out what, slowly
                        problems, *counts = check_conversation(messages, estimate_limit)
                        if problems:
                            for field, message in problems:
                                add(lineno, field, message)
                            continue
                        passed = (counts[0], 2 * len(messages) + counts[1], content_fingerprint(messages))
                    tokens, shape, fingerprint = passed
                    if counter is not None:
                        tokens = counter(messages)
                        if tokens > max_tokens:
                            add(
                                lineno,
                                "messages",
                                f"conversation is {tokens} tokens ({token_method}); limit is {max_tokens}",
                            )
                            continue
                    add_line(lineno)
                    add_offset(buf_offset + start)
                    first = first_seen(fingerprint, index)
                    if first != index:  # fingerprint seen before: compare full digests
                        if first >= 0:
                            seen.promote(fingerprint, first)
                        earlier = same_digest(hash(tuple(map(astuple, messages))), index)
                        if earlier != index:
                            repeats.add(lineno, seen_lines[earlier])
                    index += 1
                    if (
                        in_train is not None
                        and fingerprint in in_train
                        and (train_line := against.match(fingerprint, messages))  # type: ignore[union-attr]
                    ):
                        overlaps.add(lineno, train_line)
                    try:
                        shapes[shape] += 1
                    except IndexError:
                        shapes.extend([0] * shape)
                        shapes[shape] += 1
                    append_tokens(tokens)
                if pos < len(buf):  # only the last segment can end without a newline
                    carry = buf[pos:]

            if at_eof:
                break
            pos_in_file += len(chunk)
            chunk = read()
            update(chunk)
        sha256 = hasher.hexdigest()

    if blank_count:
        warnings.append(
            ValidationIssue(
                line=first_blank,
                field="",
                message=f"{blank_count} blank line(s) skipped (first at line {first_blank})",
                file=name,
            )
        )
    if crlf_count:
        warnings.append(
            ValidationIssue(
                line=first_crlf,
                field="",
                message=(
                    f"{crlf_count} line(s) end with CRLF (\\r\\n), first at line {first_crlf}; "
                    "tolerated, the split files use LF"
                ),
                file=name,
            )
        )
    warnings.extend(repeats.warnings("duplicate examples"))
    warnings.extend(overlaps.warnings("examples also in the training file"))
    nonblank = lineno - blank_count
    examples = len(token_counts)
    if nonblank == 0:
        add(0, "", "file is empty")
    elif nonblank < min_examples:
        add(
            0,
            "",
            f"file has {nonblank} example(s); need at least {min_examples} "
            "(one for training and one for validation)",
        )

    role_counts, turns = count_roles(shapes)
    report = build_report(
        name,
        errs,
        warnings,
        lineno,
        examples,
        sha256,
        tokens=token_stats(token_counts, seen_lines),
        role_counts=role_counts,
        token_method=token_method,
        duplicates=repeats.count,
        overlap=overlaps.count,
        longest_line=longest_line,
        longest_line_bytes=longest,
        turns=turns,
    )
    return report, seen
