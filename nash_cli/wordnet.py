"""WordNet for METEOR, found or prepared offline.

nltk's METEOR matches synonyms through WordNet. Where nltk already finds its `wordnet` corpus
(`nltk.download("wordnet")` was run once), that is used. Otherwise a system WordNet 3.0 in the
original Princeton layout (Debian/Ubuntu: `apt-get install wordnet-base wordnet-sense-index`,
files in /usr/share/wordnet) is turned into a directory nltk can read: the files are *copied*
(nltk refuses symlinks that leave its data root) and the `lexnames` table, which Debian does
not ship, is written from `LEXNAMES` below. Nothing here touches the network.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from nash_cli.errors import NashError

#: The lexicographer files of WordNet 3.0 (lexnames(5)): id, name, syntactic category
#: (1 noun, 2 verb, 3 adjective, 4 adverb). nltk reads it to name each synset's lexical file.
LEXNAMES: tuple[tuple[int, str, int], ...] = (
    (0, "adj.all", 3),
    (1, "adj.pert", 3),
    (2, "adv.all", 4),
    *[
        (3 + i, f"noun.{name}", 1)
        for i, name in enumerate(
            (
                "Tops act animal artifact attribute body cognition communication event feeling food "
                "group location motive object person phenomenon plant possession process quantity "
                "relation shape state substance time"
            ).split()
        )
    ],
    *[
        (29 + i, f"verb.{name}", 2)
        for i, name in enumerate(
            (
                "body change cognition communication competition consumption contact creation emotion "
                "motion perception possession social stative weather"
            ).split()
        )
    ],
    (44, "adj.ppl", 3),
)

#: Files nltk's WordNetCorpusReader opens (besides `lexnames`, which is written here).
REQUIRED_FILES = (
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)

#: Where system packages put WordNet 3.0 dictionaries (Debian, Homebrew-like prefixes).
SYSTEM_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/opt/homebrew/share/wordnet")

HOW_TO_GET = (
    "METEOR needs WordNet: run `python -m nltk.downloader wordnet` once (network), or install "
    "WordNet 3.0 offline with `apt-get install wordnet-base wordnet-sense-index`"
)


def lexnames_text() -> str:
    """The `lexnames` file: one `NN<TAB>name<TAB>category` line per lexicographer file."""
    return "".join(f"{index:02d}\t{name}\t{category}\n" for index, name, category in LEXNAMES)


def cache_dir() -> Path:
    """Where nash keeps prepared data: $NASH_CACHE, else $XDG_CACHE_HOME/nash, else ~/.cache/nash."""
    if os.environ.get("NASH_CACHE"):
        return Path(os.environ["NASH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "nash"


def system_wordnet_dirs() -> list[Path]:
    """Candidate system WordNet directories: $WNSEARCHDIR (WordNet's own variable) first."""
    candidates = [os.environ["WNSEARCHDIR"]] if os.environ.get("WNSEARCHDIR") else []
    return [Path(path) for path in [*candidates, *SYSTEM_DIRS]]


def prepare_wordnet(source: Path, target: Path | None = None) -> Path:
    """Builds an nltk-readable WordNet directory from a Princeton-layout one; returns it.

    An existing, complete `target` is reused. The copy is made in a temporary directory beside
    `target` and renamed into place, so an interrupted run leaves nothing half-written.

    Args:
        source: A WordNet 3.0 dictionary directory (data.noun, index.sense, ...).
        target: Result directory; default `cache_dir()/nltk_data/corpora/wordnet`.

    Raises:
        NashError: `source` lacks a file nltk needs (typically index.sense).
    """
    target = target or cache_dir() / "nltk_data" / "corpora" / "wordnet"
    if _is_complete(target):
        return target
    missing = [name for name in REQUIRED_FILES if not (source / name).is_file()]
    if missing:
        hint = " (Debian: apt-get install wordnet-sense-index)" if "index.sense" in missing else ""
        raise NashError(f"WordNet in {source} lacks {', '.join(missing)}{hint}")
    from nash_cli.artifact import staged_output

    # force: an incomplete earlier copy is replaced (it is nash's own cache).
    with staged_output(target, force=True, kind=None) as staging:
        for name in REQUIRED_FILES:
            shutil.copyfile(source / name, staging / name)
        (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    return target


def _is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in (*REQUIRED_FILES, "lexnames"))


#: Readers already built in this process, by real path (loading one takes seconds).
_READERS: dict[str, object] = {}


def _reader(root, data_root: Path | None = None):
    """An nltk WordNet reader on `root` (a path or an nltk path pointer), built once per process."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    path = str(getattr(root, "path", root))  # a zip pointer's path is the zip file: keyed as is
    key = os.path.realpath(path) if os.path.isdir(path) else str(root)
    if key in _READERS:
        return _READERS[key]
    # nltk reads corpora only below a directory on its data path (its pathsec sandbox).
    if data_root is not None and str(data_root) not in nltk.data.path:
        nltk.data.path.append(str(data_root))
    with warnings.catch_warnings():
        # Without the Open Multilingual Wordnet nltk warns once; METEOR is English-only.
        warnings.simplefilter("ignore")
        reader = WordNetCorpusReader(root, None)
    _READERS[key] = reader
    return reader


def load_wordnet():
    """Returns an nltk WordNet reader: nltk's own corpus if installed, else a prepared system copy.

    Raises:
        NashError: No WordNet anywhere; the message says how to get one.
    """
    import nltk

    try:
        root = nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            root = nltk.data.find("corpora/wordnet.zip/wordnet/")
        except LookupError:
            root = None
    if root is not None:
        try:
            return _reader(root)
        except (OSError, LookupError, ValueError, AssertionError):
            pass  # a broken nltk copy: fall back to the system one
    data_root = cache_dir() / "nltk_data"
    prepared = data_root / "corpora" / "wordnet"
    if _is_complete(prepared):
        return _reader(str(prepared), data_root)
    for directory in system_wordnet_dirs():
        if (directory / "data.noun").is_file():
            return _reader(str(prepare_wordnet(directory, prepared)), data_root)
    raise NashError(HOW_TO_GET)
