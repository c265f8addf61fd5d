"""Streaming validator for chat-format JSONL datasets (one conversation per line).

Each non-blank line must be a JSON object shaped like HuggingFaceH4/ultrachat_200k::

    {"prompt": "...", "prompt_id": "...", "messages": [{"role": "user", "content": "..."}, ...]}

Only ``messages`` is required; ``prompt``, ``prompt_id`` and any other top-level or per-message
fields are allowed silently and not type-checked (they are not used for training). They must
still be valid JSON and valid UTF-8, because the training service parses the whole line.

Speed matters (datasets are hundreds of MB and this runs inside an activity), so the work is
split so that the common, valid line takes one short path:

* :mod:`~core.validation.reading`: the file in 1 MiB chunks into reused buffers, bounded memory,
  the optional SHA-256 on a helper thread, gzip/zip/UTF-16 files recognised from the first bytes;
* :mod:`~core.validation.schema`: the typed msgspec decoders that decode and type-check a line in
  one step;
* :mod:`~core.validation.checker`: :func:`validate_file`, :func:`validate_stream` (a download
  validated as it arrives, written to a file on the way), :func:`validate_pair` and the loop over
  lines;
* :mod:`~core.validation.rules`: the conversation rules, a fast check for every line and a slow
  one naming what is wrong;
* :mod:`~core.validation.diagnosis`: what is wrong with a line that did not decode;
* :mod:`~core.validation.duplicates`: duplicate examples and train/validation overlap;
* :mod:`~core.validation.tokens`: the token estimate, or exact counts with a tokenizer;
* :mod:`~core.validation.report`: the :class:`ValidationReport` and its statistics;
* ``python -m core.validation`` (:mod:`core.validation.__main__`): the command line.

Bad content never raises: it is reported in the returned :class:`ValidationReport`. Only an
``OSError`` from opening or reading ``path`` (or the tokenizer) propagates; ``python -m
core.validation`` turns it into exit code 2 with a message, never a traceback.

Rules (E = error, W = warning; line 0 means the file as a whole):

===========================================  ===  =====================================
case                                         E/W  field
===========================================  ===  =====================================
gzip / zip / UTF-16 file                      E   "" (line 0; nothing else is checked)
0-byte file, or only blank lines              E   "" (line 0, "file is empty")
fewer than ``min_examples`` non-blank lines   E   "" (line 0)
line longer than 8 MiB                        E   ""
invalid UTF-8                                 E   ""
invalid JSON (incl. truncated last line)      E   ""
NaN / Infinity literals                       E   ""
line is not an object                         E   ""
``messages`` missing / not a list / empty     E   "messages"
message not an object                         E   "messages[i]"
role / content missing or not a string        E   "messages[i].role" / "messages[i].content"
role not system/user/assistant                E   "messages[i].role"
content empty or whitespace only              E   "messages[i].content"
unpaired UTF-16 surrogate escape              E   path of the string
system message not at index 0                 E   "messages[i].role"
same role twice in a row                      E   "messages[i].role" (the second one)
no user or no assistant message               E   "messages"
last message not from the assistant           E   "messages"
tokens > ``max_tokens`` (either method)       E   "messages"
blank lines                                   W   "" (first blank line; count)
UTF-8 BOM at the start of the file            W   "" (line 1)
CRLF line endings                             W   "" (first CRLF line; count)
duplicate example (same roles + contents)     W   "messages" ("duplicate of line N")
validation example also in training file      W   "messages" (validation report only)
more of those than ``max_errors``             W   "messages" (line 0: the total)
extra fields (top level or in a message)      --  allowed silently
missing path, directory, no permission        --  ``OSError`` raised (CLI: exit 2)
===========================================  ===  =====================================

Duplicates and overlap are only looked for among valid examples, and they compare ``messages``
only: two lines with the same conversation but different ``prompt_id``, key order, spacing or
escapes are duplicates. They are warnings: training still runs (and the 80/20 split is not
de-duplicated), but repeated examples are over-weighted and overlap inflates validation scores.
"""

from core.validation.checker import MIN_EXAMPLES, PairReport, validate_file, validate_pair, validate_stream
from core.validation.duplicates import conversation_digest
from core.validation.reading import MAX_LINE_BYTES
from core.validation.schema import ROLES
from core.validation.tokens import chat_text, estimate_tokens, load_tokenizer

__all__ = [
    "MAX_LINE_BYTES",
    "MIN_EXAMPLES",
    "ROLES",
    "PairReport",
    "chat_text",
    "conversation_digest",
    "estimate_tokens",
    "load_tokenizer",
    "validate_file",
    "validate_pair",
    "validate_stream",
]
