"""core.evaluation: hand-checked metric values, the documented sampling rule, prompt/reference extraction."""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import pytest

from core.evaluation import (
    MAX_EVAL_TOKENS,
    EvalExample,
    eval_examples,
    load_sample,
    mean,
    normalize,
    rouge_l_f1,
    sample_indices,
    score,
    shorten,
    token_f1,
)

# --- normalize -------------------------------------------------------------------------------------


def test_normalize_squad_style() -> None:
    # lowercase, punctuation deleted (not replaced by a space: "don't" -> "dont"), articles dropped
    assert normalize("The cat, a DOG & an owl!") == ["cat", "dog", "owl"]
    assert normalize("Don't stop.") == ["dont", "stop"]
    # symbols (category S*) go too: "$", "+", emoji
    assert normalize("$5 + 3 😀") == ["5", "3"]
    # articles only as whole tokens
    assert normalize("anthem theory") == ["anthem", "theory"]


def test_normalize_unicode() -> None:
    # NFKC: full-width letters -> ASCII; a decomposed "e + combining acute" == precomposed "é"
    assert normalize("ＡＢＣ") == ["abc"]
    assert normalize("Cafe\u0301 CRÈME") == normalize("café crème") == ["café", "crème"]
    assert normalize("café") != normalize("cafe")  # accents are kept, not stripped
    # CJK ideographs / kana are one token each, even without spaces; latin runs stay words
    assert normalize("Phi-3 是模型。") == ["phi3", "是", "模", "型"]
    assert normalize("ねこが好き") == ["ね", "こ", "が", "好", "き"]
    assert normalize("한국어") == ["한", "국", "어"]


# --- metric: hand-checked values -----------------------------------------------------------------


def test_hand_checked_overlap() -> None:
    # cand=[cat,sat,on,mat]  ref=[cat,sat,on,red,mat]   (articles dropped)
    # LCS = cat,sat,on,mat = 4 -> P = 4/4, R = 4/5, F1 = 2*1*0.8/1.8 = 0.8889
    # bag overlap is also 4 -> token F1 = 0.8889; combined = 0.8889
    cand, ref = "the cat sat on the mat", "a cat sat on a red mat"
    assert rouge_l_f1(cand, ref) == pytest.approx(8 / 9)
    assert token_f1(cand, ref) == pytest.approx(8 / 9)
    assert score(cand, ref) == (0.8889, 0.8889, 0.8889)


def test_word_order_separates_rouge_l_from_token_f1() -> None:
    # cand=[cat,on,mat,sat]  ref=[cat,sat,on,mat]
    # same bag of words -> token F1 = 1.0
    # LCS = cat,on,mat = 3 -> P = R = 3/4 -> ROUGE-L F1 = 0.75; combined = (0.75 + 1) / 2 = 0.875
    cand, ref = "cat on mat sat", "cat sat on mat"
    assert token_f1(cand, ref) == 1.0
    assert rouge_l_f1(cand, ref) == pytest.approx(0.75)
    assert score(cand, ref) == (0.875, 0.75, 1.0)


def test_multiset_overlap_counts_repeats_once_each() -> None:
    # cand=[cat,cat,cat]  ref=[cat,dog]: overlap min(3,1) = 1 -> P = 1/3, R = 1/2,
    # F1 = 2*(1/3)*(1/2) / (5/6) = 0.4; LCS = 1 too -> 0.4
    assert token_f1("cat cat cat", "cat dog") == pytest.approx(0.4)
    assert rouge_l_f1("cat cat cat", "cat dog") == pytest.approx(0.4)


def test_punctuation_and_case_insensitive() -> None:
    # both sides -> [hello, world]
    assert score("Hello, WORLD!!", "hello world") == (1.0, 1.0, 1.0)
    assert score("«The» PARIS…", "paris") == (1.0, 1.0, 1.0)  # non-ASCII punctuation too


def test_partial_answer() -> None:
    # cand=[answer,paris]  ref=[paris]: overlap 1 -> P = 1/2, R = 1, F1 = 2*0.5/1.5 = 0.6667
    assert score("The answer: Paris.", "Paris") == (0.6667, 0.6667, 0.6667)


def test_empty_cases() -> None:
    # both normalise to nothing -> 1.0 (agree on saying nothing); exactly one empty -> 0.0
    assert score("", "") == (1.0, 1.0, 1.0)
    assert score("The.", "  !? ") == (1.0, 1.0, 1.0)  # articles and punctuation only
    assert score("cat", "") == (0.0, 0.0, 0.0)
    assert score("", "cat") == (0.0, 0.0, 0.0)
    assert score("dog", "cat") == (0.0, 0.0, 0.0)  # disjoint


def test_cjk_without_spaces() -> None:
    # cand=[我,喜,欢,猫]  ref=[我,喜,欢,狗]: LCS = 我喜欢 = 3 -> P = R = 3/4 -> 0.75; bag overlap 3 -> 0.75
    assert score("我喜欢猫。", "我喜欢狗") == (0.75, 0.75, 0.75)
    # reordered: cand=[猫,我,喜,欢] ref=[我,喜,欢,猫]: LCS = 3 -> 0.75; same bag -> token F1 1.0
    assert score("猫我喜欢", "我喜欢猫") == (0.875, 0.75, 1.0)


def _lcs_reference(a: list[str], b: list[str]) -> int:
    """Textbook O(n*m) table, to check the bit-parallel implementation against."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_rouge_l_matches_textbook_lcs() -> None:
    rng = random.Random(7)
    for _ in range(300):
        a = [f"w{rng.randrange(6)}" for _ in range(rng.randrange(0, 30))]
        b = [f"w{rng.randrange(6)}" for _ in range(rng.randrange(0, 90))]
        lcs = _lcs_reference(a, b)
        if not a or not b:
            expected = 1.0 if a == b else 0.0
        else:
            expected = 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))  # = 2PR/(P+R)
        assert rouge_l_f1(" ".join(a), " ".join(b)) == pytest.approx(expected)
        assert rouge_l_f1(" ".join(b), " ".join(a)) == pytest.approx(expected)  # symmetric for beta = 1


def test_runaway_candidate_is_capped() -> None:
    assert MAX_EVAL_TOKENS == 1024
    ref = "cat sat on the mat"  # [cat,sat,on,mat]
    runaway = "cat sat on mat " * 1250  # 5000 tokens
    start = time.perf_counter()
    combined, rouge_l, tf1 = score(runaway, ref)
    assert time.perf_counter() - start < 1.0
    # ROUGE-L sees the first 1024 tokens: LCS = 4, P = 4/1024, R = 1 -> F1 = 8/1028 = 0.0078
    assert rouge_l == round(8 / 1028, 4) == 0.0078
    # token F1 is not capped: overlap 4 of 5000, P = 4/5000, R = 1 -> F1 = 8/5004 = 0.0016
    assert tf1 == round(8 / 5004, 4) == 0.0016
    assert combined == round((8 / 1028 + 8 / 5004) / 2, 4)
    # the cap really truncates: the matching words only after token 1024 -> ROUGE-L 0
    assert rouge_l_f1("filler " * MAX_EVAL_TOKENS + "cat sat on mat", ref) == 0.0


def test_worst_case_is_fast() -> None:
    words = [f"w{i}" for i in range(5000)]
    start = time.perf_counter()
    value = rouge_l_f1(" ".join(words), " ".join(reversed(words)))
    assert time.perf_counter() - start < 1.0
    # both capped to 1024 tokens: w0..w1023 vs w4999..w3976 share nothing
    assert value == 0.0
    same = " ".join(words)
    assert rouge_l_f1(same, same) == 1.0


# --- sampling ------------------------------------------------------------------------------------


def _documented_rule(population: int, k: int, seed: int) -> list[int]:
    ranked = sorted(range(population), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    return sorted(ranked[:k])


@pytest.mark.parametrize(("population", "k", "seed"), [(10, 3, 42), (100, 5, 0), (1000, 37, -3), (7, 7, 1)])
def test_sample_follows_documented_rule(population: int, k: int, seed: int) -> None:
    got = sample_indices(population, k, seed)
    assert got == sample_indices(population, k, seed)  # deterministic
    assert got == _documented_rule(population, k, seed)
    assert got == sorted(set(got))  # sorted and distinct
    assert len(got) == min(k, population)
    assert all(0 <= i < population for i in got)


def test_sample_pinned_values() -> None:
    # Pinned literals: must never change between Python versions or releases of this code.
    assert sample_indices(10, 3, 42) == [0, 1, 6]
    assert sample_indices(100, 5, 0) == [15, 44, 46, 87, 99]


def test_sample_edges() -> None:
    assert sample_indices(1000, 10, 1) != sample_indices(1000, 10, 2)
    assert sample_indices(5, 10, 1) == [0, 1, 2, 3, 4]
    assert sample_indices(0, 10, 1) == []
    assert sample_indices(-1, 10, 1) == []
    assert sample_indices(10, 0, 1) == []
    assert sample_indices(10, -2, 1) == []


# --- eval_examples / load_sample -----------------------------------------------------------------


def _line(messages: list[dict[str, str]], **extra: object) -> bytes:
    return json.dumps({"messages": messages, **extra}, ensure_ascii=False).encode()


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def test_eval_examples(tmp_path: Path) -> None:
    multi = [
        _msg("system", "be brief"),
        _msg("user", "q1"),
        _msg("assistant", "a1"),
        _msg("user", "q2 — é"),
        _msg("assistant", "a2"),
    ]
    lines = [
        b"\xef\xbb\xbf" + _line(multi),  # 0: BOM on the first line; multi-turn
        b"",  # blank: not counted
        _line([_msg("user", "only a question")]),  # 1: no assistant turn -> skipped
        b"   \t",  # whitespace-only: blank, not counted
        _line([_msg("assistant", "hi"), _msg("user", "q")]),  # 2: no user before an assistant -> skipped
        b"{not json",  # 3: skipped
        b'{"messages": "nope"}',  # 4: skipped
        _line([_msg("user", "q"), _msg("assistant", "a"), _msg("user", "trailing")]) + b"\r",  # 5: CRLF
        _line([{"role": "user", "content": "x", "name": "u"}, _msg("assistant", "y")], prompt_id="p"),  # 6
        _line([_msg("user", "q"), {"role": "assistant", "content": None}]),  # 7: content not a string
        b"[1, 2]",  # 8: not an object
    ]
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    got = eval_examples(path)
    # index = ordinal among NON-BLANK lines (blank lines are not counted, skipped examples are)
    assert [e.index for e in got] == [0, 5, 6]
    # prompt = everything before the LAST assistant turn, system turn included
    assert got[0] == EvalExample(0, multi[:4], "a2")
    # anything after the last assistant turn is dropped
    assert got[1] == EvalExample(5, [_msg("user", "q")], "a")
    # extra top-level and per-message fields are ignored
    assert got[2] == EvalExample(6, [_msg("user", "x")], "y")


def test_eval_examples_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        eval_examples(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError):
        load_sample(tmp_path / "missing.jsonl", 3, 1)


def test_load_sample_matches_eval_examples(tmp_path: Path) -> None:
    lines = []
    for i in range(60):
        if i % 7 == 3:
            lines.append(_line([_msg("user", f"unanswered {i}")]))  # unusable
        else:
            lines.append(_line([_msg("user", f"q{i}"), _msg("assistant", f"a{i}")]))
        if i % 11 == 0:
            lines.append(b"")
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines))  # no final newline
    everything = eval_examples(path)
    assert len(everything) == 60 - len([i for i in range(60) if i % 7 == 3])
    for k, seed in [(1, 1), (5, 42), (10, 7), (len(everything), 3), (1000, 3), (0, 1)]:
        expected = [everything[i] for i in sample_indices(len(everything), k, seed)]
        got = load_sample(path, k, seed)
        assert got == expected
        assert [e.index for e in got] == sorted(e.index for e in got)
    assert load_sample(path, 1000, 3) == everything


# --- helpers -------------------------------------------------------------------------------------


def test_shorten() -> None:
    assert shorten("  a\n b\t\tc  ") == "a b c"
    assert shorten("x" * 160) == "x" * 160  # exactly at the limit: not cut
    cut = shorten("word " * 100, limit=20)
    assert len(cut) <= 20
    assert cut.endswith("…")
    assert cut == "word word word word…"  # no space before the ellipsis
    assert shorten("abcdef", limit=1) == "…"
    with pytest.raises(ValueError):
        shorten("abc", limit=0)


def test_mean() -> None:
    assert mean([]) == 0.0
    assert mean([1.0, 0.0, 0.0]) == 0.3333
    assert mean([0.1, 0.1, 0.1]) == 0.1
    assert mean((0.25, 0.75)) == 0.5
