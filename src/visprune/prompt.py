"""Reading the question back out of a prompt, for text-aware scorers."""

from __future__ import annotations

import re

# Role markers of common chat templates, as they read after decoding with
# skip_special_tokens=True (so "<|im_start|>user\n" reads "user\n").
USER_MARKERS = ("USER:", "User:", "Human:", "[INST]", "<|im_start|>user", "user\n")
ASSISTANT_MARKERS = ("ASSISTANT:", "Assistant:", "[/INST]", "<|im_start|>assistant", "assistant\n")


def extract_question(
    text: str,
    user_markers: tuple[str, ...] = USER_MARKERS,
    assistant_markers: tuple[str, ...] = ASSISTANT_MARKERS,
) -> str:
    """The last user turn of a decoded prompt, without template boilerplate.

    Everything from the last assistant marker on is dropped, then everything up to the end of the
    last user marker before it. A prompt with no markers comes back stripped, whole.

    >>> extract_question("USER:  \\nWhat colour is the star? ASSISTANT:")
    'What colour is the star?'
    >>> extract_question("user : what colour is the star ? assistant :")
    'what colour is the star ?'
    """
    ends = [m.start() for m in _last_matches(text, assistant_markers)]
    if ends:
        text = text[: max(ends)]
    starts = [m.end() for m in _last_matches(text, user_markers)]
    if starts:
        text = text[max(starts) :]
    return " ".join(text.split())


def _pattern(marker: str) -> re.Pattern:
    # Word-level tokenizers decode "USER:" as "USER :"; allow spaces inside markers that have none.
    # Lower-casing tokenizers (the bundled shapes model's) decode it "user :": match either case.
    if any(c.isspace() for c in marker):
        return re.compile(re.escape(marker), re.IGNORECASE)
    return re.compile(r"\s*".join(re.escape(c) for c in marker), re.IGNORECASE)


def _last_matches(text: str, markers: tuple[str, ...]) -> list[re.Match]:
    out = []
    for marker in markers:
        found = list(_pattern(marker).finditer(text))
        if found:
            out.append(found[-1])
    return out
