"""How far keylimit's default token estimate is from OpenAI's tokenizer, on texts found on this machine.

    python bench/token_error.py                        # cl100k_base, 40 samples per kind
    python bench/token_error.py --per-kind 80 --json /tmp/token_error.json
    python bench/token_error.py --encoding o200k_base  # GPT-4o's vocabulary

The exact counts come from the ``bpe-openai`` package (in the ``bench`` extra), which ships
OpenAI's vocabularies and tokenizes offline. Every sample is picked deterministically from
files on this machine: keylimit's README and docstrings, installed packages' descriptions,
the Python standard library, .js and .json files in site-packages, translated man pages and
CPython's CJK test texts, plus chat bodies built from those texts (``count_prompt`` against
OpenAI's documented chat framing). The error of a sample is (estimate - exact) / exact.
"""

from __future__ import annotations

import argparse
import ast
import email
import gzip
import importlib
import json
import math
import re
import statistics
import sys
import sysconfig
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))  # measure this checkout's estimator

from keylimit.ratelimit._tokens import EstimatingTokenCounter  # noqa: E402

MIN_CHARS = 100
"""Shorter texts are left out: their relative error is mostly rounding."""
PER_MESSAGE = 3
"""OpenAI's documented chat framing: 3 tokens per message plus its role (and 1 plus the ``name``)..."""
REPLY_PRIMING = 3
"""... and 3 that prime the reply, once per request."""

SITE = Path(sysconfig.get_paths()["purelib"])
STDLIB = Path(sysconfig.get_paths()["stdlib"])
MAN = Path("/usr/share/man")
CJK = STDLIB / "test" / "cjkencodings"
CHAT = "chat (count_prompt)"
OTHER = "other languages"

Encode = Callable[[str], list[int]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sample:
    kind: str
    source: str
    chars: int
    exact: int
    estimate: int

    @property
    def error(self) -> float:
        return (self.estimate - self.exact) / self.exact


@dataclass(frozen=True, slots=True)
class Stats:
    samples: int
    mean_abs: float
    p90_abs: float
    bias: float
    most_low: float
    most_high: float

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Stats:
        errors = [s.error for s in samples]
        absolute = sorted(abs(e) for e in errors)
        return cls(
            samples=len(errors),
            mean_abs=statistics.fmean(absolute),
            p90_abs=absolute[math.ceil(0.9 * len(absolute)) - 1],  # nearest rank
            bias=statistics.fmean(errors),
            most_low=min(errors),
            most_high=max(errors),
        )


# --- picking texts ----------------------------------------------------------------------------

Doc = tuple[str, str]  # (source, text)


def spread(items: Sequence[T], n: int) -> list[T]:
    """``n`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def window(text: str, start_fraction: float, chars: int) -> str:
    """Up to ``chars`` characters from ``start_fraction`` into ``text``, cut at line ends where there are any."""
    start = int(len(text) * start_fraction)
    if start:
        newline = text.find("\n", start, start + chars // 4)
        start = newline + 1 if newline >= 0 else start
    piece = text[start : start + chars]
    if start + chars < len(text):
        newline = piece.rfind("\n")
        if newline >= chars // 2:
            piece = piece[:newline]
    return piece.strip()


def windows(docs: Sequence[Doc], n: int, chars: int, first: float) -> list[Doc]:
    """``n`` texts from ``docs``: one window each from evenly spaced documents when there are
    enough, otherwise several windows evenly spaced through each document."""
    docs = spread(docs, n)
    per_doc = math.ceil(n / len(docs)) if docs else 0
    rounds: list[list[Doc]] = [[] for _ in range(per_doc)]
    for source, text in docs:
        for j in range(per_doc):
            fraction = first + j * (1 - first) / per_doc
            piece = window(text, fraction, chars)
            rounds[j].append((f"{source} @{fraction:.0%}" if per_doc > 1 else source, piece))
    picked: list[Doc] = []
    seen: set[str] = set()
    for source, piece in (doc for batch in rounds for doc in batch):
        if len(piece) >= MIN_CHARS and piece not in seen and len(picked) < n:
            seen.add(piece)
            picked.append((source, piece))
    return picked


def interleave(groups: Sequence[Sequence[T]]) -> list[T]:
    """The first item of each group, then the second of each, and so on."""
    longest = max(map(len, groups), default=0)
    return [group[i] for i in range(longest) for group in groups if i < len(group)]


def read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def files(root: Path, pattern: str) -> list[Doc]:
    found = []
    for path in sorted(root.glob(pattern)):
        text = read(path)
        if text:
            found.append((str(path.relative_to(root)), text))
    return found


def readme_paragraphs() -> list[Doc]:
    text = read(ROOT / "README.md") or ""
    paragraphs = (p.strip() for p in text.split("\n\n"))
    return [(f"README.md ¶{i}", p) for i, p in enumerate(paragraphs) if len(p) >= MIN_CHARS]


def docstrings() -> list[Doc]:
    found = []
    for path in sorted((ROOT / "src" / "keylimit").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_CHARS:
                    name = "" if isinstance(node, ast.Module) else f":{node.name}"
                    found.append((f"{path.relative_to(ROOT / 'src')}{name}", doc))
    return found


def descriptions() -> list[Doc]:
    found = []
    for path in sorted(SITE.glob("*.dist-info/METADATA")):
        if path.parent.name.startswith("keylimit-"):
            continue  # its README is sampled already
        message = email.message_from_string(read(path) or "")
        body = message.get_payload()
        text = body if isinstance(body, str) and body.strip() else str(message.get("Description", ""))
        if len(text.strip()) >= MIN_CHARS:
            found.append((path.parent.name, text))
    return found


_ROFF_ESCAPE = re.compile(r"\\f(?:\[[^]]*]|\(..|.)|\\[&|^%]|\\\*\(..|\\\*.|\\\(..|\\\[[^]]*]")


def man_page(path: Path) -> str:
    """The text of a man page: macro lines dropped (paragraph breaks kept), font escapes removed."""
    try:
        raw = gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return ""
    lines: list[str] = []
    for line in raw.splitlines():
        if line.startswith((".", "'")):
            if lines and lines[-1]:
                lines.append("")
            continue
        line = line.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ")
        lines.append(_ROFF_ESCAPE.sub("", line))
    return "\n".join(lines)


def other_languages(n: int) -> list[Doc]:
    """Translated man pages (up to ``n`` per language, evenly spaced) and CPython's CJK test
    texts, round-robin over the languages."""
    groups: list[list[Doc]] = []
    if MAN.is_dir():
        for language in sorted(p for p in MAN.iterdir() if p.is_dir() and not p.name.startswith("man")):
            pages = [(str(p.relative_to(MAN)), man_page(p)) for p in sorted(language.rglob("*.gz"))]
            groups.append(spread([(source, text) for source, text in pages if len(text) >= 4 * MIN_CHARS], n))
    cjk: dict[str, Doc] = {}
    for source, text in files(CJK, "*-utf8.txt"):
        cjk.setdefault(text, (f"test/cjkencodings/{source}", text))
    groups.append(list(cjk.values()))
    return interleave(groups)


def latin_script(text: str) -> bool:
    """Whether most letters are ASCII (German, Czech, Turkish...), as opposed to CJK, Cyrillic..."""
    letters = [c for c in text if c.isalpha()]
    return sum(c.isascii() for c in letters) * 2 >= len(letters)


def text_kinds(n: int, chars: int) -> dict[str, list[Doc]]:
    """Each kind's samples. Windows of code start a third of the way in, past licences and imports."""
    code = 1 / 3
    others = other_languages(n)
    latin = [doc for doc in others if latin_script(doc[1])][:n]
    other_scripts = [doc for doc in others if not latin_script(doc[1])][:n]
    return {
        "keylimit README": windows(readme_paragraphs(), n, chars, 0),
        "keylimit docstrings": windows(docstrings(), n, chars, 0),
        "package descriptions": windows(descriptions(), n, chars, 0),
        "Python stdlib": windows(files(STDLIB, "*.py"), n, chars, code),
        "JavaScript": windows(files(SITE, "**/*.js"), n, chars, code),
        "JSON": windows(files(SITE, "**/*.json"), n, chars, 0),
        f"{OTHER}, Latin script": windows(latin, n, chars, 0.2),
        f"{OTHER}, other scripts": windows(other_scripts, n, chars, 0.2),
    }


def chats(kinds: dict[str, list[Doc]], n: int) -> list[tuple[str, dict[str, Any]]]:
    """Chat bodies: a docstring as the system message, then user, assistant and user messages
    taken in turn from every kind; every fourth user message has a ``name``."""
    system = kinds["keylimit docstrings"]
    pool = interleave(list(kinds.values()))
    if not system or not pool:
        return []
    bodies = []
    for i in range(n):
        parts = [pool[(3 * i + j) % len(pool)] for j in range(3)]
        messages: list[dict[str, str]] = [{"role": "system", "content": system[i % len(system)][1]}]
        for role, (_, text) in zip(("user", "assistant", "user"), parts, strict=True):
            messages.append({"role": role, "content": text})
        if i % 4 == 0:
            messages[1]["name"] = f"user_{i}"
        bodies.append((" + ".join(source for source, _ in parts), {"model": "gpt-4", "messages": messages}))
    return bodies


def chat_tokens(body: dict[str, Any], encode: Encode) -> int:
    total = REPLY_PRIMING
    for message in body["messages"]:
        total += PER_MESSAGE + len(encode(message["role"])) + len(encode(message["content"]))
        if "name" in message:
            total += 1 + len(encode(message["name"]))
    return total


# --- measuring and reporting ------------------------------------------------------------------


def measure(kinds: dict[str, list[Doc]], bodies: Iterable[tuple[str, dict[str, Any]]], encode: Encode) -> list[Sample]:
    counter = EstimatingTokenCounter()
    samples = []
    for kind, docs in kinds.items():
        for source, text in docs:
            exact = len(encode(text))
            if exact:
                samples.append(Sample(kind, source, len(text), exact, counter.count_text(text)))
    for source, body in bodies:
        chars = sum(len(m["content"]) for m in body["messages"])
        samples.append(Sample(CHAT, source, chars, chat_tokens(body, encode), counter.count_prompt(body)))
    return samples


def table(rows: list[tuple[str, Stats]]) -> str:
    head = ("sample", "n", "mean |err|", "p90 |err|", "bias", "most low", "most high")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in rows:
        shares = (f"{s.mean_abs:.1%}", f"{s.p90_abs:.1%}")
        signed = (f"{s.bias:+.1%}", f"{s.most_low:+.1%}", f"{s.most_high:+.1%}")
        lines.append(f"| {name} | {s.samples} | " + " | ".join((*shares, *signed)) + " |")
    return "\n".join(lines)


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/token_error.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--per-kind", type=positive, default=40, metavar="N", help="samples per kind (default 40)")
    p.add_argument("--chars", type=positive, default=2000, help="longest sample in characters (default 2000)")
    p.add_argument("--encoding", default="cl100k_base", choices=("cl100k_base", "o200k_base"))
    p.add_argument("--worst", type=int, default=8, metavar="K", help="list the K worst samples (default 8)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the figures and every sample as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        bpe_openai = importlib.import_module("bpe_openai")
    except ImportError:
        print("needs bpe-openai: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    encode: Encode = bpe_openai.get_encoding(args.encoding).encode_ordinary
    version = metadata.version("bpe-openai")

    kinds = text_kinds(args.per_kind, args.chars)
    samples = measure(kinds, chats(kinds, args.per_kind), encode)
    names = [*kinds, CHAT]
    per_kind = {name: [s for s in samples if s.kind == name] for name in names}
    totals = {
        "English and code (count_text)": [s for s in samples if s.kind != CHAT and not s.kind.startswith(OTHER)],
        "all texts (count_text)": [s for s in samples if s.kind != CHAT],
    }
    rows = [(name, Stats.of(found)) for name, found in (per_kind | totals).items() if found]

    print(f"exact: {args.encoding} via bpe-openai {version} (offline); estimate: keylimit EstimatingTokenCounter")
    print(f"error = (estimate - exact) / exact; up to {args.per_kind} samples per kind, {MIN_CHARS}-{args.chars} chars")
    print(f"texts from: {ROOT / 'README.md'}, {ROOT / 'src/keylimit'}, {SITE}, {STDLIB}, {MAN}, {CJK}")
    print("chat: count_prompt vs OpenAI's framing (3 per message + role [+ 1 + name], 3 for the reply)\n")
    print(table(rows))
    for name in names:
        if not per_kind[name]:
            print(f"(no samples found for {name})")
    if args.worst:
        print(f"\nworst {args.worst}:")
        for s in sorted(samples, key=lambda s: -abs(s.error))[: args.worst]:
            print(f"  {s.error:+6.1%}  {s.kind}: {s.source} ({s.exact} tokens, estimate {s.estimate})")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "exact": {"encoding": args.encoding, "package": "bpe-openai", "version": version},
            "per_kind": args.per_kind,
            "chars": args.chars,
            "stats": {name: asdict(stats) for name, stats in rows},
            "samples": [{**asdict(s), "error": s.error} for s in samples],
        }
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
