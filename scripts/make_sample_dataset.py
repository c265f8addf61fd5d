"""Generate the demo's small chat dataset: support conversations about one fictional product.

Offline and deterministic (same ``--count`` and ``--seed`` give the same bytes): no network, no
Hugging Face hub. Each line is shaped like HuggingFaceH4/ultrachat_200k::

    {"prompt": "<first user message>", "prompt_id": "<sha256 hex of prompt>",
     "messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}, ...]}

The domain is a support FAQ for the fictional Contoso K2 smart kettle: every topic is asked in
several phrasings and always gets the same answer, so even a tiny model fine-tuned on a few
hundred lines gives recognisable answers. The mix: mostly 2-message conversations, some with a
follow-up question (4 or 6 messages), and about one in ten starting with a system message. Roles
alternate user/assistant, every conversation ends with the assistant, and prompts are unique.

Usage::

    python scripts/make_sample_dataset.py                 # 300 lines -> data/sample/chats.jsonl
    python scripts/make_sample_dataset.py --count 50 --seed 7 --out /tmp/chats.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_COUNT = 300
DEFAULT_SEED = 42
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "sample" / "chats.jsonl"

SYSTEM_PROMPTS = (
    "You are the Contoso support assistant. Answer questions about the Contoso K2 smart kettle "
    "briefly and accurately.",
    "You help customers with the Contoso K2 smart kettle and the Contoso Home app. Keep answers "
    "short and practical.",
)

OPENERS = ("", "", "", "Hi! ", "Hello. ", "Quick question. ", "Hey there! ", "Good morning. ")
CLOSERS = ("", "", "", " Thanks!", " Thank you.", " Any ideas?", " Cheers.")

# Conversation shapes and their weights: number of user/assistant exchanges.
EXCHANGES = (1, 2, 3)
EXCHANGE_WEIGHTS = (60, 32, 8)
SYSTEM_SHARE = 0.1
SAME_TOPIC_FOLLOW_UP = 0.7  # otherwise the next question is about another topic
MAX_ATTEMPTS = 100  # tries to find an unused first prompt before accepting a repeat


@dataclass(frozen=True)
class Topic:
    name: str
    questions: tuple[str, ...]
    answer: str
    follow_ups: tuple[tuple[str, str], ...]  # (question, answer)


TOPICS: tuple[Topic, ...] = (
    Topic(
        "reset",
        (
            "How do I reset my K2 kettle?",
            "How can I factory reset the Contoso K2?",
            "My K2 is acting strange. How do I do a reset?",
            "What is the way to restore the K2 to factory settings?",
            "Is there a reset button on the K2 kettle?",
        ),
        "Hold the Power and Temp buttons together for 10 seconds until the ring light blinks white "
        "three times. The K2 restarts with factory settings.",
        (
            (
                "Will I lose my presets?",
                "Yes. A reset erases your Wi-Fi setup and saved presets, so pair the kettle in the "
                "Contoso Home app again afterwards.",
            ),
        ),
    ),
    Topic(
        "wifi",
        (
            "How do I connect the K2 to my Wi-Fi?",
            "How do I pair my kettle with the Contoso Home app?",
            "The app cannot find my K2. How do I set up Wi-Fi?",
            "What are the steps to get the K2 online?",
            "How do I add the K2 kettle to the Contoso Home app?",
        ),
        "Open the Contoso Home app, tap Add device and choose K2, then hold the Warm button for "
        "3 seconds until the ring light pulses blue. The K2 only works with 2.4 GHz Wi-Fi.",
        (
            (
                "Does it work with 5 GHz Wi-Fi?",
                "No. The K2 only supports 2.4 GHz networks. If your router combines both bands, "
                "turn on its 2.4 GHz band or create a separate 2.4 GHz network for the kettle.",
            ),
            (
                "The light never turns blue. What now?",
                "Unplug the base for 10 seconds, plug it back in, and hold the Warm button for "
                "3 seconds again. If it still does not pulse blue, reset the kettle and try once more.",
            ),
        ),
    ),
    Topic(
        "capacity",
        (
            "How much water does the K2 hold?",
            "What is the capacity of the Contoso K2?",
            "How many cups can I boil at once in the K2?",
            "What is the minimum amount of water for the K2?",
            "How full can I fill my K2 kettle?",
        ),
        "The K2 holds 1.7 litres, about 7 cups. The minimum fill is 0.5 litres; below that the "
        "kettle will not start.",
        (
            (
                "What happens if I overfill it?",
                "Water can spit from the spout while boiling. Keep the level between the MIN and "
                "MAX marks inside the kettle.",
            ),
        ),
    ),
    Topic(
        "presets",
        (
            "What temperatures can the K2 heat water to?",
            "Which temperature presets does the K2 have?",
            "Can I heat water to 80 degrees for green tea with the K2?",
            "How do I choose the water temperature on the K2?",
            "What are the K2 temperature settings?",
        ),
        "The K2 has five presets: 70, 80, 85, 90 and 100 degrees C. Press the Temp button to cycle "
        "through them, then press Power to start.",
        (
            (
                "Can I set a custom temperature?",
                "Yes, in the Contoso Home app: open the K2, tap Temperature and pick any value from "
                "40 to 100 degrees C in steps of 5.",
            ),
        ),
    ),
    Topic(
        "keep_warm",
        (
            "How does the keep warm function work on the K2?",
            "Can the K2 keep my water hot?",
            "How long does the K2 keep water warm?",
            "How do I turn on keep warm on my kettle?",
            "How do I switch off keep warm on the K2?",
        ),
        "Press the Warm button to turn keep warm on or off. The K2 then holds the water at the "
        "chosen temperature for up to 30 minutes.",
        (
            (
                "Can I make it longer than 30 minutes?",
                "No. Keep warm always stops after 30 minutes to save energy and protect the heating element.",
            ),
        ),
    ),
    Topic(
        "descale",
        (
            "How do I descale the K2?",
            "There is white limescale in my kettle. How do I clean it?",
            "How often should I descale my Contoso K2?",
            "What is the best way to remove limescale from the K2?",
            "How do I use descale mode on the K2?",
        ),
        "Fill the K2 to MAX with half white vinegar and half water, start Descale mode in the "
        "Contoso Home app, leave it for one hour, then rinse twice with clean water. Descale every "
        "4 weeks in hard-water areas.",
        (
            (
                "Can I use citric acid instead of vinegar?",
                "Yes. Use two tablespoons of citric acid in 1 litre of water and follow the same steps.",
            ),
        ),
    ),
    Topic(
        "warranty",
        (
            "What warranty does the K2 have?",
            "How long is the Contoso K2 guaranteed?",
            "Is my K2 kettle still under warranty after a year?",
            "What does the K2 warranty cover?",
            "How do I make a warranty claim for my K2?",
        ),
        "The K2 has a 2-year warranty from the date of purchase. It covers manufacturing defects "
        "but not limescale damage. Keep your receipt and register at contoso.example/warranty.",
        (
            (
                "Can I extend it?",
                "Yes. Registering within 30 days of purchase at contoso.example/warranty extends "
                "the warranty to 3 years.",
            ),
        ),
    ),
    Topic(
        "e1",
        (
            "My K2 shows E1. What does it mean?",
            "What is error E1 on the Contoso K2?",
            "The display says E1 and the kettle will not boil.",
            "Why does my kettle show E1?",
            "How do I fix an E1 error on the K2?",
        ),
        "E1 means the water is below the minimum fill. Add at least 0.5 litres and press Power again.",
        (
            (
                "It shows E1 even when full.",
                "Lift the kettle off the base and put it back so it sits flat, then try again. If "
                "E1 stays with a full kettle, the water level sensor needs service: contact support.",
            ),
        ),
    ),
    Topic(
        "e2",
        (
            "What does error E2 mean on the K2?",
            "My kettle shows E2. Is it broken?",
            "The K2 display shows E2 after I switched it on.",
            "How do I clear the E2 error on my K2?",
            "Why did my K2 stop with E2?",
        ),
        "E2 means the kettle overheated, usually because it was switched on empty. Unplug it and "
        "let it cool for 15 minutes, then fill it and try again.",
        (
            (
                "E2 came back. What should I do?",
                "Stop using the kettle and contact Contoso support; the K2 may need a repair under warranty.",
            ),
        ),
    ),
    Topic(
        "cleaning",
        (
            "Can I put the K2 in the dishwasher?",
            "How do I clean the outside of my K2?",
            "Is the Contoso K2 dishwasher safe?",
            "What is the right way to clean the K2 kettle?",
            "Can I wash the K2 base with water?",
        ),
        "No, the K2 is not dishwasher safe; only the spout filter is. Wipe the body with a damp "
        "cloth and never put the base in water.",
        (
            (
                "How do I take the filter out?",
                "Open the lid and slide the filter up out of the spout. Rinse it under the tap "
                "once a week and slide it back until it clicks.",
            ),
        ),
    ),
    Topic(
        "power",
        (
            "What voltage does the K2 need?",
            "Can I use my K2 in the United States?",
            "How many watts is the Contoso K2?",
            "Will the K2 work on 110 volts?",
            "What is the power rating of the K2 kettle?",
        ),
        "The K2 is rated 220-240 V and 2200 W. It does not work on 110-120 V mains, and a travel "
        "adapter does not change the voltage.",
        (
            (
                "Is there a 120 V version?",
                "Yes, the K2-US model is rated 120 V and 1500 W. It boils a little more slowly.",
            ),
        ),
    ),
    Topic(
        "boil_time",
        (
            "How long does the K2 take to boil?",
            "How fast does the Contoso K2 boil water?",
            "How many minutes to boil a full K2?",
            "Is the K2 quick to boil one cup?",
            "What is the boiling time of the K2 kettle?",
        ),
        "A full 1.7 litres boils in about 4 minutes, and one cup in about 1 minute.",
        (
            (
                "Why is mine slower than that?",
                "Limescale on the heating plate slows the K2 down. Descale it, and check that it is "
                "plugged straight into the wall rather than an extension lead.",
            ),
        ),
    ),
    Topic(
        "schedule",
        (
            "Can I schedule the K2 to boil in the morning?",
            "How do I set a timer on my K2 kettle?",
            "Is it possible to have the K2 boil at a set time?",
            "How do I use the schedule feature on the Contoso K2?",
            "Can the K2 have hot water ready when I wake up?",
        ),
        "Yes. In the Contoso Home app, open the K2, tap Schedule, and pick a time and a temperature. "
        "Fill the kettle and leave it on its base before the scheduled time.",
        (
            (
                "Can I set a different time for weekends?",
                "Yes. Each schedule has its own days, so create one for weekdays and another for "
                "Saturday and Sunday.",
            ),
        ),
    ),
    Topic(
        "child_lock",
        (
            "Does the K2 have a child lock?",
            "How do I lock the buttons on my K2?",
            "How do I turn off the child lock on the K2?",
            "Can I stop my kids from switching on the K2?",
            "Why do the K2 buttons not respond?",
        ),
        "Hold the Power button for 5 seconds to lock or unlock the buttons. A lock icon shows on "
        "the display while the child lock is on.",
        (
            (
                "Can I still use the app when it is locked?",
                "Yes. The child lock only disables the buttons on the kettle; the Contoso Home app "
                "and schedules keep working.",
            ),
        ),
    ),
    Topic(
        "mute",
        (
            "How do I turn off the beeping on the K2?",
            "Can I mute my Contoso K2?",
            "The K2 beeps too loudly. Can I silence it?",
            "How do I switch off the K2 sounds?",
            "Is there a silent mode on the K2 kettle?",
        ),
        "Hold the Temp button for 5 seconds until the ring light flashes once. Do the same to turn "
        "the sounds back on.",
        (),
    ),
    Topic(
        "firmware",
        (
            "How do I update the K2 firmware?",
            "Does the Contoso K2 get software updates?",
            "How can I see which firmware my K2 has?",
            "Is my K2 kettle up to date?",
            "How do firmware updates work on the K2?",
        ),
        "Updates install automatically at night while the K2 is on its base and online. To see the "
        "version, open the Contoso Home app and go to Settings, then About.",
        (
            (
                "Can I install an update right now?",
                "Yes. In the app go to Settings, then About, and tap Check for updates. Keep the "
                "kettle on its base until the ring light stops pulsing.",
            ),
        ),
    ),
    Topic(
        "returns",
        (
            "Can I return my K2 kettle?",
            "What is the return policy for the Contoso K2?",
            "I do not like my K2. Can I get a refund?",
            "How many days do I have to return the K2?",
            "How do I send back my Contoso K2?",
        ),
        "You can return the K2 within 30 days of purchase for a full refund. Start the return at "
        "contoso.example/returns and keep the original box.",
        (
            (
                "Do I have to pay for shipping?",
                "No. The return label from contoso.example/returns is free within the 30 days.",
            ),
        ),
    ),
    Topic(
        "contact",
        (
            "How do I contact Contoso support?",
            "What is the phone number for Contoso support?",
            "Can I talk to a person about my K2?",
            "When is Contoso support open?",
            "How can I reach Contoso customer service?",
        ),
        "Email support@contoso.example or call 0800 555 0199, Monday to Friday, 8:00 to 18:00.",
        (
            (
                "Is there a chat option?",
                "Yes. Open the Contoso Home app and tap Help, then Chat with us, during the same "
                "opening hours.",
            ),
        ),
    ),
    Topic(
        "voice",
        (
            "Does the K2 work with voice assistants?",
            "Can I ask Alexa to boil my K2?",
            "Does the Contoso K2 support Google Home?",
            "How do I control the K2 by voice?",
            "Can I boil the K2 with a voice command?",
        ),
        "Yes. Link your Contoso Home account in the Alexa or Google Home app, then say "
        '"ask Contoso to boil the kettle". The kettle must already be filled and on its base.',
        (),
    ),
    Topic(
        "filter",
        (
            "Where can I buy a new filter for the K2?",
            "What is the part number of the K2 filter?",
            "How often should I replace the K2 filter?",
            "My K2 filter is damaged. Can I get a replacement?",
            "Do I need to change the filter in my K2?",
        ),
        "The replacement filter is part K2-F, sold at contoso.example/parts. Replace it every "
        "12 months or when it is damaged.",
        (),
    ),
)


def _pick(rng: random.Random, items: tuple[str, ...]) -> str:
    return items[rng.randrange(len(items))]


def _question(rng: random.Random, topic: Topic) -> str:
    return f"{_pick(rng, OPENERS)}{_pick(rng, topic.questions)}{_pick(rng, CLOSERS)}"


def _conversation(rng: random.Random, topic: Topic) -> list[dict[str, str]]:
    """One conversation opening with `topic`; follow-ups from the same or another topic."""
    exchanges = rng.choices(EXCHANGES, weights=EXCHANGE_WEIGHTS)[0]
    messages: list[dict[str, str]] = []
    if rng.random() < SYSTEM_SHARE:
        messages.append({"role": "system", "content": _pick(rng, SYSTEM_PROMPTS)})
    messages += [
        {"role": "user", "content": _question(rng, topic)},
        {"role": "assistant", "content": topic.answer},
    ]
    asked: list[tuple[str, str]] = []
    current = topic
    for _ in range(exchanges - 1):
        unused = [f for f in current.follow_ups if f not in asked]
        if unused and rng.random() < SAME_TOPIC_FOLLOW_UP:
            follow_up = unused[rng.randrange(len(unused))]
            asked.append(follow_up)
            question, answer = follow_up
        else:
            others = [t for t in TOPICS if t.name != current.name]
            current = others[rng.randrange(len(others))]
            question, answer = f"One more question. {_pick(rng, current.questions)}", current.answer
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages


def generate(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """`count` conversations as ultrachat_200k records; the same arguments give the same records.

    Topics come round-robin in a seeded order, so every topic is covered about equally.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rng = random.Random(seed)
    order = list(TOPICS)
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i in range(count):
        if i % len(order) == 0:
            rng.shuffle(order)
        topic = order[i % len(order)]
        for _ in range(MAX_ATTEMPTS):
            messages = _conversation(rng, topic)
            prompt = next(m["content"] for m in messages if m["role"] == "user")
            if prompt not in seen:
                break
        seen.add(prompt)
        records.append(
            {
                "prompt": prompt,
                "prompt_id": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
                "messages": messages,
            }
        )
    return records


def render(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> bytes:
    """The JSONL file's bytes: one `json.dumps` (default separators) per line, `\\n` endings, UTF-8."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generate(count, seed)).encode("utf-8")


def write(out: Path, count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> int:
    """Write the dataset to `out` atomically; returns the number of bytes written."""
    data = render(count, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=DEFAULT_COUNT, help="conversations (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output JSONL (default data/sample/chats.jsonl)"
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    size = write(args.out, args.count, args.seed)
    print(f"wrote {args.count} conversations ({size} bytes) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
