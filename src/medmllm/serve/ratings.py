"""Human rating of model outputs (RadFM section 5.1.2): raters, sessions, items and ratings in SQLite.

    store = RatingStore("ratings.sqlite")              # created on first use, WAL mode
    password = store.add_rater("dr-a")                 # random password, shown once
    store.load_items("items.jsonl")                    # {"id", "images", "question", "reference", "outputs"}
    rater = store.verify_password("dr-a", password)    # Rater | None
    slots = store.blinded_models(rater.id, "case-1")   # model names in this rater's stable random order
    store.rate(rater.id, "case-1", slots[0], 4)

Tables (docs/serving.md "Rating page"):

- ``raters (id, name, password, created)``: ``password`` is ``scrypt$N$r$p$SALT$HASH`` (hex) from
  ``hashlib.scrypt`` with a 16-byte random salt; the password itself is never stored.
- ``sessions (token_hash, rater_id, created, expires)``: the SHA-256 of the random cookie token, so
  a copy of the database cannot be used to sign in.
- ``items (id, position, task, question, reference, images)``: ``images`` a JSON list of absolute
  paths, checked when loaded; ``outputs (item_id, model, text)``.
- ``ratings (rater_id, item_id, model, score, time)``: one score 0-5 per rater, item and model;
  rating again replaces the score and its time (UTC, ISO 8601).

The blinding order of an item's outputs is a shuffle seeded by HMAC(database key, rater id, item id):
random across raters and items, the same on every reload, and not computable without the database.
Only stdlib at import time (``medmllm eval ratings`` answers at once).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import random
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from medmllm.errors import MedMLLMError

# RadFM section 5.1.2, the rubric shown to raters: (score, name, description).
RUBRIC: tuple[tuple[int, str, str], ...] = (
    (0, "Garbled", "The content is incomprehensible and lacks any readability."),
    (1, "Inaccurate", "While readable, the content is entirely incorrect and lacks meaningful information."),
    (2, "Partially Informative", "The content holds some reference value, yet its correctness is subpar."),
    (3, "Moderately Accurate", "The content provides reference points, with approximately half of the information being correct, but containing several errors."),
    (4, "Mostly Accurate", "The content is almost entirely correct, with only a few omissions or errors present."),
    (5, "Completely Correct", "The content is accurate in its entirety, without any mistakes."),
)
MIN_SCORE, MAX_SCORE = RUBRIC[0][0], RUBRIC[-1][0]
# Files a rating item may show: served as they are (2D) or as a slice mosaic (3D scans).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".nii", ".nii.gz", ".dcm", ".npy")
SESSION_SECONDS = 12 * 3600
# RadFM rates only open-ended answers (sec. 5.1.2): the task families of medmllm.eval.tasks loaded from runs.
OPEN_ENDED_FAMILIES = ("vqa-open", "report", "rationale", "record")
# scrypt cost: 16 MiB and ~50 ms per check (OWASP's minimum is N=2^17 at r=8 for stored hashes of
# high-value accounts; raters sign in a few times a day on a closed network, 2^14 keeps a 2-core box responsive).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, password TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, rater_id INTEGER NOT NULL REFERENCES raters(id) ON DELETE CASCADE,
    created TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, position INTEGER NOT NULL, task TEXT, question TEXT NOT NULL, reference TEXT NOT NULL,
    images TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outputs (
    item_id TEXT NOT NULL REFERENCES items(id), model TEXT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (item_id, model));
CREATE TABLE IF NOT EXISTS ratings (
    rater_id INTEGER NOT NULL REFERENCES raters(id), item_id TEXT NOT NULL, model TEXT NOT NULL,
    score INTEGER NOT NULL CHECK (score BETWEEN 0 AND 5), time TEXT NOT NULL,
    PRIMARY KEY (rater_id, item_id, model), FOREIGN KEY (item_id, model) REFERENCES outputs(item_id, model));
"""


@dataclass(frozen=True)
class Rater:
    id: int
    name: str


@dataclass(frozen=True)
class Item:
    """A case to rate; ``outputs`` maps model name -> text (never sent to a rater with the names)."""

    id: str
    position: int
    task: str | None
    question: str
    reference: str
    images: tuple[Path, ...]
    outputs: dict[str, str]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$SALT$HASH`` of ``password`` (hex salt and 32-byte hash)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` gives ``stored`` (the parameters are read from it), in constant time."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        expected = bytes.fromhex(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except ValueError:
        return False
    return kind == "scrypt" and hmac.compare_digest(got, expected)


# Checked against when the rater name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password("", salt=b"\0" * 16)


class RatingStore:
    """The rating database at ``path`` (created with its tables on first use, unless ``create=False``).

    Each call opens its own connection (the web server calls from several threads); WAL mode lets
    raters write while an export or ``medmllm eval ratings`` reads.
    """

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise MedMLLMError(f"{self.path}: is a folder, expected a rating database file (e.g. ratings.sqlite)")
        if not create and not self.path.is_file():
            raise MedMLLMError(f"{self.path}: no such rating database (`medmllm serve raters add` creates one)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('blinding_key', ?)", (secrets.token_hex(32),))
        except sqlite3.DatabaseError as e:
            raise MedMLLMError(f"{self.path}: not a rating database ({e})") from None
        self._blinding_key = bytes.fromhex(self._one("SELECT value FROM meta WHERE key = 'blinding_key'")[0])

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def _one(self, sql: str, args: tuple = ()) -> tuple | None:
        with self._connect() as db:
            return db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._connect() as db:
            return db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------------------------ raters

    def add_rater(self, name: str, password: str | None = None) -> str:
        """Create rater ``name``; returns the password (a random 16-character one when not given)."""
        name = name.strip()
        if not name or len(name) > 100 or any(c.isspace() for c in name):
            raise MedMLLMError(f"rater name {name!r}: use 1-100 characters without spaces")
        if password is None:
            password = secrets.token_urlsafe(12)
        if len(password) < 8:
            raise MedMLLMError("the password needs at least 8 characters")
        try:
            with self._connect() as db:
                db.execute("INSERT INTO raters (name, password, created) VALUES (?, ?, ?)", (name, hash_password(password), utc_now()))
        except sqlite3.IntegrityError:
            raise MedMLLMError(f"rater {name!r} already exists in {self.path}") from None
        return password

    def reset_password(self, name: str, password: str | None = None) -> str:
        """Give rater ``name`` a new password (random when not given) and end their sessions; returns it."""
        password = secrets.token_urlsafe(12) if password is None else password
        if len(password) < 8:
            raise MedMLLMError("the password needs at least 8 characters")
        with self._connect() as db:
            row = db.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise MedMLLMError(f"no rater {name!r} in {self.path}")
            db.execute("UPDATE raters SET password = ? WHERE id = ?", (hash_password(password), row[0]))
            db.execute("DELETE FROM sessions WHERE rater_id = ?", (row[0],))
        return password

    def raters(self) -> list[Rater]:
        return [Rater(*row) for row in self._all("SELECT id, name FROM raters ORDER BY id")]

    def verify_password(self, name: str, password: str) -> Rater | None:
        """The rater when ``password`` is theirs, else None (unknown names take as long)."""
        row = self._one("SELECT id, name, password FROM raters WHERE name = ?", (name,))
        if row is None:
            check_password(password, _DUMMY_HASH)
            return None
        return Rater(row[0], row[1]) if check_password(password, row[2]) else None

    # ---------------------------------------------------------------------------------- sessions

    def new_session(self, rater_id: int, seconds: int = SESSION_SECONDS) -> str:
        """A random session token for the cookie; only its SHA-256 is stored."""
        token = secrets.token_urlsafe(32)
        with self._connect() as db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (_token_hash(token), rater_id, utc_now(), time.time() + seconds))
        return token

    def session_rater(self, token: str | None) -> Rater | None:
        """The rater of a live session token, else None."""
        if not token:
            return None
        row = self._one(
            "SELECT raters.id, raters.name FROM sessions JOIN raters ON raters.id = sessions.rater_id WHERE token_hash = ? AND expires > ?",
            (_token_hash(token), time.time()),
        )
        return Rater(*row) if row else None

    def end_session(self, token: str | None) -> None:
        if token:
            with self._connect() as db:
                db.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))

    # ------------------------------------------------------------------------------------- items

    def load_items(self, path: str | Path) -> tuple[int, int]:
        """Load a JSONL of items ({"id", "images", "question", "reference", "outputs", optional "task"});
        image paths are relative to the file's folder. Returns (added, already loaded).

        A line that is invalid, names a missing image or changes an item already loaded is a
        `MedMLLMError` "FILE:LINE: problem", and nothing of the file is loaded.
        """
        from medmllm.data.io import read_jsonl

        path = Path(path)
        return self._insert([(f"{path}:{number}", obj) for number, obj in read_jsonl(path)], path.parent)

    def load_runs(self, runs: list[str | Path], *, per_task: int | None = None, seed: int = 0,
                  families: tuple[str, ...] = OPEN_ENDED_FAMILIES) -> tuple[int, int]:
        """Load the samples that every ``medmllm eval run`` folder in ``runs`` answered (same benchmark),
        with each run's prediction as the output of the model named by its folder; see `items_from_runs`."""
        items = items_from_runs(runs, per_task=per_task, seed=seed, families=families)
        return self._insert([(f"{item['id']} (from the runs)", item) for item in items], Path("/"))

    def _insert(self, rows: list[tuple[str, dict]], base: Path) -> tuple[int, int]:
        """Validate (where, row) pairs (image paths relative to ``base``) and add them in one transaction."""
        from pydantic import ValidationError

        from medmllm.config_files import describe_validation_error

        checked = []
        for where, obj in rows:
            try:
                row = _item_row_model().model_validate(obj)
            except ValidationError as e:
                raise MedMLLMError(f"{where}: {describe_validation_error(e, 'item')}") from None
            images = []
            for image in row.images:
                image_path = (base / image).resolve()
                if not image_path.is_file():
                    raise MedMLLMError(f"{where}: image {image} not found (paths are relative to {base})")
                if not image_path.name.lower().endswith(IMAGE_SUFFIXES):
                    raise MedMLLMError(f"{where}: image {image}: expected one of {', '.join(IMAGE_SUFFIXES)}")
                images.append(str(image_path))
            checked.append((where, row, images))
        added = kept = 0
        with self._connect() as db:
            position = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM items").fetchone()[0]
            for where, row, images in checked:
                old = _read_item(db, row.id)
                if old is not None:
                    same = (old.task, old.question, old.reference, [str(p) for p in old.images], old.outputs) == (
                        row.task, row.question, row.reference, images, row.outputs)
                    if not same:
                        raise MedMLLMError(f"{where}: item {row.id!r} is already loaded with other content; give the new version a new id")
                    kept += 1
                    continue
                db.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)", (row.id, position, row.task, row.question, row.reference, json.dumps(images)))
                db.executemany("INSERT INTO outputs VALUES (?, ?, ?)", [(row.id, model, text) for model, text in row.outputs.items()])
                position += 1
                added += 1
        return added, kept

    def item_ids(self) -> list[str]:
        return [row[0] for row in self._all("SELECT id FROM items ORDER BY position")]

    def item(self, item_id: str) -> Item | None:
        with self._connect() as db:
            return _read_item(db, item_id)

    def blinded_models(self, rater_id: int, item_id: str) -> list[str]:
        """The item's model names in this rater's order: shuffled, seeded by HMAC(key, rater, item)."""
        models = [row[0] for row in self._all("SELECT model FROM outputs WHERE item_id = ? ORDER BY model", (item_id,))]
        seed = hmac.new(self._blinding_key, f"{rater_id}\0{item_id}".encode(), hashlib.sha256).digest()
        random.Random(int.from_bytes(seed[:8], "big")).shuffle(models)
        return models

    # ----------------------------------------------------------------------------------- ratings

    def rate(self, rater_id: int, item_id: str, model: str, score: int) -> str:
        """Store (or replace) a score; returns its time. Scores outside 0-5 are a `MedMLLMError`."""
        if not isinstance(score, int) or isinstance(score, bool) or not MIN_SCORE <= score <= MAX_SCORE:
            raise MedMLLMError(f"score must be an integer from {MIN_SCORE} to {MAX_SCORE}, got {score!r}")
        now = utc_now()
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO ratings VALUES (?, ?, ?, ?, ?) ON CONFLICT (rater_id, item_id, model) DO UPDATE SET score = excluded.score, time = excluded.time",
                    (rater_id, item_id, model, score, now),
                )
        except sqlite3.IntegrityError:
            raise MedMLLMError(f"item {item_id!r} has no output of that model") from None
        return now

    def rater_scores(self, rater_id: int, item_id: str) -> dict[str, int]:
        """model -> this rater's score on the item."""
        return dict(self._all("SELECT model, score FROM ratings WHERE rater_id = ? AND item_id = ?", (rater_id, item_id)))

    def progress(self, rater_id: int) -> dict[str, tuple[int, int]]:
        """item id -> (outputs this rater scored, outputs), in item order."""
        rows = self._all(
            "SELECT items.id, COUNT(ratings.score), COUNT(outputs.model) FROM items JOIN outputs ON outputs.item_id = items.id "
            "LEFT JOIN ratings ON ratings.item_id = outputs.item_id AND ratings.model = outputs.model AND ratings.rater_id = ? "
            "GROUP BY items.id ORDER BY items.position",
            (rater_id,),
        )
        return {item_id: (done, total) for item_id, done, total in rows}

    def ratings(self) -> list[dict]:
        """Every rating: {rater_id, rater, item_id, task, model, score, time}, by time."""
        rows = self._all(
            "SELECT ratings.rater_id, raters.name, ratings.item_id, items.task, ratings.model, ratings.score, ratings.time "
            "FROM ratings JOIN raters ON raters.id = ratings.rater_id JOIN items ON items.id = ratings.item_id "
            "ORDER BY ratings.time, ratings.rater_id, items.position, ratings.model"
        )
        keys = ("rater_id", "rater", "item_id", "task", "model", "score", "time")
        return [dict(zip(keys, row)) for row in rows]

    def export(self, out: str | Path) -> int:
        """Write every rating to ``out`` as CSV (.csv), JSON (.json) or JSONL (.jsonl); returns how many."""
        import csv

        from medmllm.scans.write import atomic_path

        out = Path(out)
        kind = out.suffix.lower()
        if kind not in (".csv", ".json", ".jsonl"):
            raise MedMLLMError(f"{out}: the export is written as .csv, .json or .jsonl, by the file's suffix")
        rows = self.ratings()
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            if kind == ".csv":
                writer = csv.DictWriter(f, fieldnames=["rater_id", "rater", "item_id", "task", "model", "score", "time"])
                writer.writeheader()
                writer.writerows(rows)
            elif kind == ".json":
                json.dump(rows, f, indent=1, ensure_ascii=False)
            else:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return len(rows)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _read_item(db: sqlite3.Connection, item_id: str) -> Item | None:
    row = db.execute("SELECT id, position, task, question, reference, images FROM items WHERE id = ?", (item_id,)).fetchone()
    if row is None:
        return None
    outputs = dict(db.execute("SELECT model, text FROM outputs WHERE item_id = ? ORDER BY model", (item_id,)).fetchall())
    return Item(row[0], row[1], row[2], row[3], row[4], tuple(Path(p) for p in json.loads(row[5])), outputs)


@functools.cache
def _item_row_model():
    """The pydantic model of one JSONL row (built on first use: pydantic stays out of start-up)."""
    from pydantic import BaseModel, ConfigDict, Field

    class ItemRow(BaseModel):
        model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

        id: str = Field(min_length=1, max_length=200)
        images: list[str] = Field(default_factory=list)
        question: str
        reference: str
        outputs: dict[str, str] = Field(min_length=1)
        task: str | None = None

    return ItemRow


# ------------------------------------------------------------------------------ eval run folders


def items_from_runs(runs: list[str | Path], *, per_task: int | None = None, seed: int = 0,
                    families: tuple[str, ...] = OPEN_ENDED_FAMILIES) -> list[dict]:
    """Rating items from ``medmllm eval run`` output folders of several models on one benchmark.

    The benchmark is read again from ``run.json``; a sample becomes an item when every run has a
    prediction for it (not an error row) and its task family (`medmllm.eval.tasks.family_of`) is
    in ``families`` (RadFM rates only the open-ended ones). Item: the sample's id, image paths,
    question (`question_text`), reference (the family's `reference`), ``task`` = the family, and
    ``outputs`` {run folder name: prediction}. ``per_task``: a random sample of that many items per
    family (RadFM: 400), drawn with ``seed``, kept in benchmark order.
    """
    from medmllm.eval.benchmarks import load_bench
    from medmllm.eval.runner import PREDICTIONS, RUN, read_predictions
    from medmllm.eval.tasks import family_of, get_family
    from medmllm.eval.tasks.base import question_text

    folders = [Path(run) for run in runs]
    if len(folders) < 2:
        raise MedMLLMError("give at least two run folders: raters compare the outputs of several models")
    names = [folder.resolve().name for folder in folders]
    if len(set(names)) != len(names):
        raise MedMLLMError(f"the run folders' names name the models and must differ: {', '.join(names)}")
    benches, predictions = set(), []
    for folder in folders:
        if not (folder / RUN).is_file():
            raise MedMLLMError(f"{folder}: not a `medmllm eval run` output folder (no {RUN})")
        benches.add(json.loads((folder / RUN).read_text())["bench"])
        predictions.append(read_predictions(folder / PREDICTIONS))
    if len(benches) != 1:
        raise MedMLLMError(f"the runs are on different benchmarks ({', '.join(sorted(benches))}); rate runs of one benchmark together")
    _, samples = load_bench(benches.pop())
    by_family: dict[str, list[dict]] = {}
    for sample in samples:
        family = family_of(sample)
        rows = [p.get(sample.id) for p in predictions]
        if family not in families or any(row is None or "prediction" not in row for row in rows):
            continue
        by_family.setdefault(family, []).append({
            "id": sample.id, "images": [ref.path for ref in sample.images], "question": question_text(sample),
            "reference": get_family(family).reference(sample), "task": family,
            "outputs": {name: str(row["prediction"]) for name, row in zip(names, rows)},
        })
    rng = random.Random(seed)
    items = []
    for family in sorted(by_family):
        rows = by_family[family]
        if per_task is not None and per_task < len(rows):
            keep = set(rng.sample(range(len(rows)), per_task))
            rows = [row for k, row in enumerate(rows) if k in keep]
        items.extend(rows)
    if not items:
        raise MedMLLMError(f"no sample of the families {', '.join(families)} has a prediction in every run")
    return items


# ----------------------------------------------------------------------------------- statistics


def summarize(rows: list[dict], *, confidence: float = 0.95) -> dict:
    """Mean score per (task, model) with its interval, and agreement between raters.

    rows: `RatingStore.ratings`. Per model: n ratings, n items, mean, ``ci`` = mean +- t * the
    item-clustered standard error (`medmllm.eval.stats.cluster_interval`; several raters of one item
    are not independent; with one rating per item it is the plain t interval), and the counts of
    each score. Agreement per task over the units (item, model) rated by at least two raters:
    Krippendorff's alpha (interval and ordinal) and ICC(2,1) over the units every rater scored.
    """
    import math

    import numpy as np

    from medmllm.eval.stats import cluster_interval, icc_2_1, krippendorff_alpha

    def clean(x: float) -> float | None:
        return None if x is None or math.isnan(x) else round(float(x), 4)

    tasks: dict[str | None, list[dict]] = {}
    for row in rows:
        tasks.setdefault(row["task"], []).append(row)
    result = {"ratings": len(rows), "raters": len({r["rater_id"] for r in rows}), "tasks": []}
    for task, task_rows in sorted(tasks.items(), key=lambda kv: kv[0] or ""):
        models = []
        for model in sorted({r["model"] for r in task_rows}):
            mine = [r for r in task_rows if r["model"] == model]
            scores = np.array([r["score"] for r in mine], dtype=np.float64)
            lo, hi = cluster_interval(scores, np.array([r["item_id"] for r in mine], dtype=object), confidence)
            models.append({
                "model": model, "n": len(mine), "items": len({r["item_id"] for r in mine}), "mean": clean(scores.mean()),
                "ci": [clean(lo), clean(hi)], "counts": [int((scores == s).sum()) for s in range(MIN_SCORE, MAX_SCORE + 1)],
            })
        raters = sorted({r["rater_id"] for r in task_rows})
        units = sorted({(r["item_id"], r["model"]) for r in task_rows})
        matrix = np.full((len(raters), len(units)), np.nan)
        for r in task_rows:
            matrix[raters.index(r["rater_id"]), units.index((r["item_id"], r["model"]))] = r["score"]
        pairable = int((np.sum(~np.isnan(matrix), axis=0) >= 2).sum())
        complete = int((~np.isnan(matrix)).all(axis=0).sum()) if raters else 0
        agreement = {
            "raters": len(raters), "units": len(units), "pairable_units": pairable, "complete_units": complete,
            "krippendorff_alpha_interval": clean(krippendorff_alpha(matrix, "interval")) if pairable else None,
            "krippendorff_alpha_ordinal": clean(krippendorff_alpha(matrix, "ordinal")) if pairable else None,
            "icc_2_1": clean(icc_2_1(matrix.T)) if len(raters) >= 2 else None,
        }
        result["tasks"].append({"task": task, "models": models, "agreement": agreement})
    return result


__all__ = ["IMAGE_SUFFIXES", "OPEN_ENDED_FAMILIES", "Item", "MAX_SCORE", "MIN_SCORE", "RUBRIC", "Rater", "RatingStore", "check_password", "hash_password", "items_from_runs", "summarize"]
