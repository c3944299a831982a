"""Caption tokenisation for the COCO caption metrics (CIDEr-D, BLEU).

The standard COCO pipeline (``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer``)
runs the Stanford CoreNLP 3.4.1 ``PTBTokenizer`` in Java with ``-preserveLines
-lowerCase`` and then drops the tokens of its ``PUNCTUATIONS`` list. Choices:

``"ptb"``
    That exact Java command on the ``stanford-corenlp-3.4.1.jar`` shipped with
    the installed ``pycocoevalcap``, and the same token filter. Needs
    ``pycocoevalcap`` and ``java``; raises :class:`RuntimeError` otherwise.
    Unlike pycocoevalcap's class it writes its temporary file to the system
    temp directory (not into site-packages), checks Java's exit status, and
    turns every line break (``\\r`` as well as ``\\n``) inside a caption into a
    space so that one caption is always one line.
``"simple"``
    A pure-Python approximation of the above (see :func:`simple_tokenize`).
    Gives the same tokens on ordinary captions; exotic input (unusual
    abbreviations, rare Unicode punctuation) can differ.
``"auto"`` (default)
    ``"ptb"`` when ``pycocoevalcap``'s jar and a ``java`` executable are found
    and the call succeeds, else ``"simple"`` with a :class:`UserWarning`.
``"none"``
    The captions are already tokenised: only whitespace is normalised
    (``" ".join(caption.split())``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "PTB_PUNCTUATIONS",
    "TOKENIZERS",
    "ptb_jar_path",
    "ptb_available",
    "ptb_tokenize",
    "simple_tokenize",
    "tokenize_captions",
]

TOKENIZERS = ("auto", "ptb", "simple", "none")

# pycocoevalcap/tokenizer/ptbtokenizer.py: tokens removed after tokenisation.
# Case-sensitive, so with -lowerCase the bracket tokens ("-lrb-" ...) survive.
PTB_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
     ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_JAR_NAME = "stanford-corenlp-3.4.1.jar"
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def ptb_jar_path() -> Path | None:
    """Path of pycocoevalcap's CoreNLP jar, or ``None`` (without importing it)."""
    try:
        spec = importlib.util.find_spec("pycocoevalcap")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        jar = Path(loc) / "tokenizer" / _JAR_NAME
        if jar.is_file():
            return jar
    return None


def ptb_available() -> bool:
    """True when the Java PTB tokenizer can be run (jar and ``java`` found)."""
    return ptb_jar_path() is not None and shutil.which("java") is not None


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """Tokenise sentences with CoreNLP's PTBTokenizer, one Java call in all.

    Same command and filter as pycocoevalcap's ``PTBTokenizer.tokenize``:
    ``java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer
    -preserveLines -lowerCase FILE``, then tokens in :data:`PTB_PUNCTUATIONS`
    are dropped and the rest joined with single spaces.
    """
    jar = ptb_jar_path()
    java = shutil.which("java")
    if jar is None or java is None:
        raise RuntimeError(
            "the PTB tokenizer needs pycocoevalcap (pip install pycocoevalcap) and a "
            "'java' executable on PATH; use tokenizer='simple' for the pure-Python fallback"
        )
    sentences = [_LINE_BREAKS.sub(" ", s) for s in sentences]
    if not sentences:
        return []
    fd, tmp = tempfile.mkstemp(suffix=".txt", prefix="visprune_ptb_")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write("\n".join(sentences).encode("utf-8"))
        proc = subprocess.run(
            [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
             "-preserveLines", "-lowerCase", tmp],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
        )
    finally:
        os.remove(tmp)
    if proc.returncode != 0:
        raise RuntimeError(
            f"PTBTokenizer failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}"
        )
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) < len(sentences):
        raise RuntimeError(
            f"PTBTokenizer returned {len(lines)} lines for {len(sentences)} captions"
        )
    return [
        " ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATIONS)
        for line in lines[: len(sentences)]
    ]


# --------------------------------------------------------------------------
# Pure-Python approximation of CoreNLP PTBTokenizer -preserveLines -lowerCase
# followed by pycocoevalcap's punctuation filter.
# --------------------------------------------------------------------------

_UNICODE = str.maketrans({
    "\u201c": ' " ', "\u201d": ' " ', "\u201e": ' " ', "\u00ab": ' " ', "\u00bb": ' " ',
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'",
    "\u2026": " ... ", "\u2014": " -- ", "\u2013": " -- ", "\u2012": " -- ", "\u2015": " -- ",
    "\u00a0": " ",
})
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_BRACKET_RE = re.compile(r"[()\[\]{}]")
_ALWAYS_SPLIT = re.compile(r"([?!;$%#])")
_ELLIPSIS = re.compile(r"\.\.\.+")
_DASHES = re.compile(r"--+")
_COMMA = re.compile(r",(?!\d)|(?<!\d),")
_COLON = re.compile(r":(?!\d)|(?<!\d):")
_CLITIC = re.compile(r"^(.+?)(n't|'s|'m|'d|'ll|'re|'ve)$")
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"],
                "wanna": ["wan", "na"], "gimme": ["gim", "me"], "lemme": ["lem", "me"]}
_ACRONYM = re.compile(r"^(?:[a-z]\.){2,}$|^(?:[a-z]\.)+[a-z]\.?$")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr prof etc vs inc ltd co corp mt ft ave gen gov sen rep rev sgt capt col lt".split()
)


def _split_token(tok: str) -> list[str]:
    if tok in ("'s", "'m", "'d", "'ll", "'re", "'ve", "n't") or not tok.strip("."):
        return [tok]
    head: list[str] = []
    tail: list[str] = []
    while len(tok) > 1 and tok[0] in "'`":
        head.append("`")
        tok = tok[1:]
    while len(tok) > 1 and tok[-1] in "'`" and not tok.endswith("n't"):
        tail.insert(0, "'")
        tok = tok[:-1]
    if len(tok) > 1 and tok.endswith("."):
        base = tok[:-1]
        if not (_ACRONYM.match(tok) or base in _ABBREVIATIONS):
            tail.insert(0, ".")
            tok = base
    body: list[str]
    m = _CLITIC.match(tok)
    if m and m.group(1) not in ("'", "`"):
        body = [m.group(1), m.group(2)]
    else:
        body = [tok]
    body = [w for t in body for w in _SPLIT_WORDS.get(t, [t])]
    return head + body + tail


def simple_tokenize(text: str) -> str:
    """Pure-Python stand-in for the PTB path: returns the space-joined tokens.

    Rules (modelled on the Java output): lower-case; curly quotes/dashes/
    ellipsis mapped to ASCII; ``( ) [ ] { }`` become ``-lrb- -rrb- -lsb- -rsb-
    -lcb- -rcb-`` (kept, as with pycocoevalcap, whose filter is case-sensitive);
    ``" ? ! ; $ % #``, ``...`` and ``--`` are split off; commas and colons are
    split off unless between digits (``1,000``, ``10:30``); a final period is
    split off unless the word is an acronym (``u.s.``, ``a.m.``) or a common
    abbreviation (``mr.``, ``st.``, ``etc.``); leading/trailing quotes are split
    off; clitics ``n't 's 'm 'd 'll 're 've`` are split (``can't`` -> ``ca
    n't``); ``cannot gonna gotta wanna`` are split as CoreNLP does; then the
    pycocoevalcap punctuation tokens are dropped. Hyphenated words, ``/``,
    ``&``, inner apostrophes (``o'clock``) and decimals are kept whole.
    """
    s = _LINE_BREAKS.sub(" ", text).translate(_UNICODE).lower()
    s = _BRACKET_RE.sub(lambda m: f" {_BRACKETS[m.group(0)]} ", s)
    s = s.replace('"', " '' ")
    s = _ALWAYS_SPLIT.sub(r" \1 ", s)
    s = _ELLIPSIS.sub(" ... ", s)
    s = _DASHES.sub(" -- ", s)
    s = _COMMA.sub(" , ", s)
    s = _COLON.sub(" : ", s)
    tokens = [t for raw in s.split() for t in _split_token(raw)]
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATIONS)


def _check_tokenizer(tokenizer: str) -> None:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose one of {TOKENIZERS}")


def _tokenize_list(sentences: list[str], tokenizer: str) -> list[str]:
    _check_tokenizer(tokenizer)
    if tokenizer == "none":
        return [" ".join(s.split()) for s in sentences]
    if tokenizer == "simple":
        return [simple_tokenize(s) for s in sentences]
    if tokenizer == "ptb":
        return ptb_tokenize(sentences)
    # auto
    if ptb_available():
        try:
            return ptb_tokenize(sentences)
        except (RuntimeError, OSError) as exc:
            reason = f"the Java PTB tokenizer failed ({exc})"
    else:
        reason = "pycocoevalcap and/or java are not available"
    warnings.warn(
        f"{reason}; using the pure-Python 'simple' tokenizer, whose scores can differ "
        "slightly from the standard COCO (PTB) tokenisation",
        UserWarning,
        stacklevel=3,
    )
    return [simple_tokenize(s) for s in sentences]


def tokenize_captions(
    captions: Mapping[Hashable, Sequence[str] | str], tokenizer: str = "auto"
) -> dict[Hashable, list[str]]:
    """Tokenise ``{id: [caption, ...]}`` (a bare string counts as one caption).

    Returns ``{id: [tokenised caption, ...]}`` with tokens joined by single
    spaces. The PTB path makes a single Java call for the whole mapping.
    """
    keys, flat = [], []
    for k, caps in captions.items():
        caps = [caps] if isinstance(caps, str) else list(caps)
        for c in caps:
            if not isinstance(c, str):
                raise TypeError(f"caption for id {k!r} is {type(c).__name__}, expected str")
            keys.append(k)
            flat.append(c)
    out: dict[Hashable, list[str]] = {k: [] for k in captions}
    for k, tok in zip(keys, _tokenize_list(flat, tokenizer)):
        out[k].append(tok)
    return out
