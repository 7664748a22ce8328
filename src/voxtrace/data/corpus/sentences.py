"""The demo corpus's own English sentences, generated combinatorially from fixed word lists.

`sentence_list()` is the same on every machine and for every build seed (its generator has a fixed seed),
so a text id names one sentence forever. Sentences have 9 to 17 words: 2-6 s of speech at usual rates.
"""

from __future__ import annotations

import functools

import numpy as np

_SUBJECTS = [
    "The old fisherman", "My younger sister", "A tired nurse", "The new teacher", "Our neighbour",
    "The quiet librarian", "A young pilot", "The baker on the corner", "Her grandfather", "The night guard",
    "A curious student", "The village doctor", "My best friend", "The station manager", "A lonely painter",
    "The tour guide", "Your cousin from the north", "The tall gardener", "A busy reporter", "The ship's cook",
]
_ACTIONS = [
    "carried the heavy boxes", "painted the wooden fence", "found a silver key", "repaired the broken clock",
    "wrote a long letter", "bought fresh bread and cheese", "lost the map again", "opened the dusty window",
    "counted the paper boats", "cleaned the kitchen floor", "fed the hungry geese", "read the evening news",
    "planted seven apple trees", "locked the garden gate", "sang an old folk song", "cooked a pot of soup",
    "washed the muddy boots", "measured the narrow bridge", "answered every question", "fixed the red bicycle",
]
_PLACES = [
    "near the harbour", "behind the train station", "in the small museum", "at the edge of the forest",
    "beside the frozen lake", "on the top floor", "inside the old mill", "across the busy market",
    "under the stone bridge", "in the school library", "along the river bank", "at the town hall",
]
_TIMES = [
    "before sunrise", "on Monday morning", "after the storm", "late last night", "during the long winter",
    "this afternoon", "every other weekend", "at half past nine", "before the guests arrived",
    "while it was raining", "in the middle of July", "just after lunch",
]
_REASONS = [
    "because nobody else wanted to", "so the children could play", "although it was far too cold",
    "while the radio played softly", "since the mayor had asked nicely", "even though the road was closed",
]
_QUESTIONS = [
    "Did {s} really {a} {p} {t}?", "Why would {s} {a} {p} {t}?", "Is it true that {sl} {ap} {p} {t}?",
]
_NUMBERS = ["two", "three", "four", "five", "six", "eight", "eleven", "twelve", "fifteen", "twenty"]
_CITIES = ["Lisbon", "Oslo", "Denver", "Nairobi", "Kyoto", "Dublin", "Quebec", "Adelaide", "Glasgow", "Lima"]
_THINGS = ["blue umbrellas", "copper kettles", "glass jars", "woollen scarves", "ripe tomatoes", "old postcards"]


def _base(action: str) -> str:
    """Past tense action -> base form for questions ("carried the boxes" -> "carry the boxes")."""
    irregular = {
        "found": "find", "wrote": "write", "bought": "buy", "lost": "lose", "fed": "feed", "read": "read",
        "sang": "sing", "fixed": "fix", "washed": "wash",
    }
    verb, _, rest = action.partition(" ")
    if verb in irregular:
        base = irregular[verb]
    elif verb.endswith("ied"):
        base = verb[:-3] + "y"
    elif verb.endswith(("ened", "ted", "ked", "ned", "red")) and not verb.endswith(("ated", "ured")):
        base = verb[:-2]
    elif verb.endswith("ed"):
        base = verb[:-1] if verb[:-2].endswith(("at", "ur", "ng", "os", "as")) else verb[:-2]
    else:
        base = verb
    return f"{base} {rest}"


@functools.lru_cache(maxsize=None)
def sentence_list(count: int = 900) -> tuple[str, ...]:
    """`count` distinct sentences (statements, questions, numbers and travel notices), in a fixed order."""
    rng = np.random.default_rng(2022)
    out: list[str] = []
    seen: set[str] = set()
    pick = lambda items: items[int(rng.integers(len(items)))]  # noqa: E731
    while len(out) < count:
        kind = rng.random()
        s, a, p, t = pick(_SUBJECTS), pick(_ACTIONS), pick(_PLACES), pick(_TIMES)
        if kind < 0.45:
            text = f"{s} {a} {p} {t}."
        elif kind < 0.65:
            text = f"{t[0].upper() + t[1:]}, {s[0].lower() + s[1:]} {a} {pick(_REASONS)}."
        elif kind < 0.8:
            template = pick(_QUESTIONS)
            text = template.format(s=s.lower() if s.startswith(("The", "A ", "Our", "My", "Her", "Your")) else s,
                                   sl=s[0].lower() + s[1:], a=_base(a), ap=a, p=p, t=t)
            text = text[0].upper() + text[1:]
        elif kind < 0.9:
            text = (f"The train to {pick(_CITIES)} leaves at {pick(_NUMBERS)} {pick(['fifteen', 'thirty', 'forty'])}"
                    f" from platform {pick(_NUMBERS)} {t}.")
        else:
            text = f"{s} ordered {pick(_NUMBERS)} {pick(_THINGS)} and {pick(_NUMBERS)} {pick(_THINGS)} {t}."
        words = len(text.split())
        if 9 <= words <= 17 and text not in seen:
            seen.add(text)
            out.append(text)
    return tuple(out)
