"""The rating store, its CLI and the rating page's HTTP API (no model: the UI router in a bare FastAPI app)."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from medmllm.errors import MedMLLMError
from medmllm.serve.ratings import RatingStore, check_password, hash_password, items_from_runs, summarize
from medmllm.serve.ui import REQUEST_HEADER, SESSION_COOKIE, build_router, structure_report

JSON_POST = {REQUEST_HEADER: "1"}
MODELS = ("model-a", "model-b", "model-c")


def output_text(model: str, i: int) -> str:
    """The text of ``model`` on item i; it does not name the model (the page must not either)."""
    return f"Answer {MODELS.index(model) * 7 + 3} to scan {i}."


def write_items(folder: Path, n: int = 3) -> Path:
    """n items with one PNG each and three model outputs; returns the JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((16, 16), 40 * i, dtype=np.uint8)).save(folder / f"case{i}.png")
        rows.append({"id": f"case-{i}", "images": [f"case{i}.png"], "question": f"Describe scan {i}.", "reference": f"Reference {i}.",
                     "outputs": {m: output_text(m, i) for m in MODELS}, "task": "report"})
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def rating_app(tmp_path):
    """(TestClient, store, password of rater 'dr-a') over a fresh database with 3 items loaded."""
    store = RatingStore(tmp_path / "data" / "ratings.sqlite")
    password = store.add_rater("dr-a")
    store.load_items(write_items(tmp_path / "items"))
    app = FastAPI()
    app.include_router(build_router(data_dir=tmp_path / "data"))
    with TestClient(app) as client:
        yield client, store, password


def sign_in(client, name="dr-a", password=None):
    return client.post("/ui/api/ratings/signin", json={"name": name, "password": password}, headers=JSON_POST)


# ----------------------------------------------------------------------------------------- store


def test_password_hash_is_salted_scrypt():
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    assert check_password("correct horse", a) and not check_password("correct hors", a)
    assert not check_password("x", "garbage")


def test_database_is_wal_and_stores_no_password(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite")
    password = store.add_rater("dr-b", "a long password")
    db = sqlite3.connect(tmp_path / "r.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert password.encode() not in (tmp_path / "r.sqlite").read_bytes()
    with pytest.raises(MedMLLMError, match="already exists"):
        store.add_rater("dr-b")
    with pytest.raises(MedMLLMError, match="at least 8"):
        store.add_rater("dr-c", "short")


def test_load_items_checks_images_and_changes(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite")
    items = write_items(tmp_path / "items", n=2)
    assert store.load_items(items) == (2, 0)
    assert store.load_items(items) == (0, 2)  # idempotent
    changed = items.read_text().replace("Reference 1.", "Another reference.")
    (tmp_path / "items" / "changed.jsonl").write_text(changed)
    with pytest.raises(MedMLLMError, match=r"changed.jsonl:2: item 'case-1' is already loaded"):
        store.load_items(tmp_path / "items" / "changed.jsonl")
    bad = tmp_path / "items" / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "images": ["../../etc/passwd.png"], "question": "q", "reference": "r", "outputs": {"m": "t"}}) + "\n")
    with pytest.raises(MedMLLMError, match="bad.jsonl:1: image ../../etc/passwd.png not found"):
        store.load_items(bad)
    bad.write_text(json.dumps({"id": "x", "question": "q", "reference": "r", "outputs": {}}) + "\n")
    with pytest.raises(MedMLLMError, match="bad.jsonl:1: outputs"):
        store.load_items(bad)
    assert store.item_ids() == ["case-0", "case-1"]


def test_blinding_is_random_per_rater_and_item_but_stable(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite")
    rows = [{"id": f"i{k}", "question": "q", "reference": "r", "outputs": {f"m{j}": "t" for j in range(5)}} for k in range(20)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store.load_items(tmp_path / "items.jsonl")
    orders = {(rater, f"i{k}"): tuple(store.blinded_models(rater, f"i{k}")) for rater in (1, 2) for k in range(20)}
    assert all(sorted(order) == [f"m{j}" for j in range(5)] for order in orders.values())
    assert len(set(orders.values())) > 10  # 40 shuffles of 5 (120 orders) are not all alike
    assert orders[(1, "i0")] == tuple(RatingStore(tmp_path / "r.sqlite").blinded_models(1, "i0"))  # reload: same order


def test_summarize_means_cis_and_agreement():
    rng = np.random.default_rng(0)
    truth = {"a": 4.0, "b": 1.5}
    rows = []
    for item in range(30):
        for model, mean in truth.items():
            base = mean + rng.normal(0, 0.6)
            for rater in (1, 2, 3):
                score = int(np.clip(round(base + rng.normal(0, 0.3)), 0, 5))
                rows.append({"rater_id": rater, "rater": f"r{rater}", "item_id": f"i{item}", "task": "vqa", "model": model, "score": score, "time": "t"})
    result = summarize(rows)
    (task,) = result["tasks"]
    by_model = {m["model"]: m for m in task["models"]}
    for model in truth:
        scores = np.array([r["score"] for r in rows if r["model"] == model], dtype=float)
        assert by_model[model]["mean"] == pytest.approx(scores.mean(), abs=1e-4)
        lo, hi = by_model[model]["ci"]
        assert lo < scores.mean() < hi and hi - lo < 1.0
        assert sum(by_model[model]["counts"]) == 90
    agreement = task["agreement"]
    assert agreement["raters"] == 3 and agreement["units"] == 60 and agreement["complete_units"] == 60
    # raters agree closely (noise 0.3 against a spread of ~1.4 between units): high agreement
    assert agreement["krippendorff_alpha_interval"] > 0.8 and agreement["icc_2_1"] > 0.8


# ---------------------------------------------------------------------------------------- HTTP


def test_sign_in_wrong_password_is_401_and_endpoints_need_a_session(rating_app):
    client, _, password = rating_app
    assert sign_in(client, password="wrong password").status_code == 401
    assert sign_in(client, name="nobody", password=password).status_code == 401
    for path in ("/ui/api/ratings/me", "/ui/api/ratings/items", "/ui/api/ratings/items/0", "/ui/api/ratings/items/0/images/0"):
        assert client.get(path).status_code == 401, path
    assert client.post("/ui/api/ratings/items/0/ratings", json={"output": 1, "score": 3}, headers=JSON_POST).status_code == 401


def test_repeated_wrong_passwords_lock_the_name(rating_app):
    from medmllm.serve.ui import MAX_FAILED_SIGN_INS

    client, store, password = rating_app
    for _ in range(MAX_FAILED_SIGN_INS):
        assert sign_in(client, password="wrong password").status_code == 401
    assert sign_in(client, password=password).status_code == 429  # even the right one, for a while
    store.add_rater("dr-other", "another password")
    assert sign_in(client, name="dr-other", password="another password").status_code == 200


def test_session_cookie_is_httponly_strict(rating_app):
    client, store, password = rating_app
    response = sign_in(client, password=password)
    assert response.status_code == 200 and response.json() == {"rater": "dr-a"}
    cookie = response.headers["set-cookie"].lower()
    assert f"{SESSION_COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/ui/api/ratings/me").json() == {"rater": "dr-a"}
    client.post("/ui/api/ratings/signout", json={}, headers=JSON_POST)
    assert client.get("/ui/api/ratings/me").status_code == 401
    sign_in(client, password=password)
    new_password = store.reset_password("dr-a")  # ends the session; the old password no longer works
    assert client.get("/ui/api/ratings/me").status_code == 401
    assert sign_in(client, password=password).status_code == 401 and sign_in(client, password=new_password).status_code == 200


def test_posts_without_the_request_header_or_json_are_refused(rating_app):
    client, _, password = rating_app
    assert client.post("/ui/api/ratings/signin", json={"name": "dr-a", "password": password}).status_code == 403
    assert client.post("/ui/api/ratings/signin", data={"name": "dr-a", "password": password}, headers=JSON_POST).status_code == 403
    sign_in(client, password=password)
    assert client.post("/ui/api/ratings/items/0/ratings", json={"output": 1, "score": 3}).status_code == 403


def test_items_are_blinded_and_rating_is_stored_with_rater_and_time(rating_app, tmp_path):
    client, store, password = rating_app
    sign_in(client, password=password)
    item = client.get("/ui/api/ratings/items/1").json()
    assert item["question"] == "Describe scan 1." and item["reference"] == "Reference 1."
    assert not any(m in json.dumps(item) for m in MODELS)  # no model names reach the rater
    texts = [o["text"] for o in item["outputs"]]
    assert sorted(texts) == sorted(output_text(m, 1) for m in MODELS)
    assert client.get("/ui/api/ratings/items/1").json()["outputs"] == item["outputs"]  # reload: same order
    response = client.post("/ui/api/ratings/items/1/ratings", json={"output": 2, "score": 4}, headers=JSON_POST)
    assert response.status_code == 200
    db = sqlite3.connect(tmp_path / "data" / "ratings.sqlite")
    (row,) = db.execute("SELECT rater_id, item_id, model, score, time FROM ratings").fetchall()
    rater_id = db.execute("SELECT id FROM raters WHERE name = 'dr-a'").fetchone()[0]
    assert row[:4] == (rater_id, "case-1", next(m for m in MODELS if output_text(m, 1) == texts[1]), 4)
    assert row[4] == response.json()["time"] and row[4].endswith("+00:00")
    assert client.get("/ui/api/ratings/items/1").json()["outputs"][1]["score"] == 4
    progress = client.get("/ui/api/ratings/items").json()["items"]
    assert progress[1] == {"n": 1, "rated": 1, "outputs": 3}


@pytest.mark.parametrize("body", [{"output": 1, "score": 6}, {"output": 1, "score": -1}, {"output": 1, "score": 2.5},
                                  {"output": 1, "score": "3"}, {"output": 0, "score": 3}, {"output": 4, "score": 3}, {"output": 1}])
def test_rating_out_of_range_is_422(rating_app, body):
    client, store, password = rating_app
    sign_in(client, password=password)
    assert client.post("/ui/api/ratings/items/0/ratings", json=body, headers=JSON_POST).status_code == 422
    assert store.ratings() == []


def test_images_are_served_by_item_and_index_only(rating_app, tmp_path):
    client, _, password = rating_app
    sign_in(client, password=password)
    response = client.get("/ui/api/ratings/items/2/images/0")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == (tmp_path / "items" / "case2.png").read_bytes()
    assert client.get("/ui/api/ratings/items/2/images/1").status_code == 404
    assert client.get("/ui/api/ratings/items/9/images/0").status_code == 404
    for path in ("/ui/api/ratings/items/2/images/..%2F..%2Fitems.jsonl", "/ui/static/..%2F__init__.py", "/ui/static/../__init__.py"):
        assert client.get(path).status_code in (404, 422), path


def test_pages_and_assets_are_served_with_a_strict_policy(rating_app):
    client, _, _ = rating_app
    for page in ("/ui/rating", "/ui/clinician"):
        response = client.get(page)
        assert response.status_code == 200 and "<html" in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "http" not in response.text.replace("http-equiv", "")  # no CDN, nothing off the server
    assert client.get("/ui/static/rating.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/static/nope.js").status_code == 404


def test_export_csv_and_cli(rating_app, tmp_path, capsys):
    from typer.testing import CliRunner

    from medmllm.cli.eval import app as eval_app
    from medmllm.cli.serve_ratings import raters_app, ratings_app

    client, store, password = rating_app
    sign_in(client, password=password)
    for n, score in ((0, 5), (1, 2)):
        client.post(f"/ui/api/ratings/items/{n}/ratings", json={"output": 1, "score": score}, headers=JSON_POST)
    db = tmp_path / "data" / "ratings.sqlite"
    runner = CliRunner()
    result = runner.invoke(ratings_app, ["export", str(db), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
    assert [(r["rater"], r["item_id"], r["score"]) for r in rows] == [("dr-a", "case-0", "5"), ("dr-a", "case-1", "2")]
    assert {r["model"] for r in rows} <= set(MODELS) and all(r["time"] for r in rows)
    result = runner.invoke(eval_app, ["ratings", str(db), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["ratings"] == 2 and summary["tasks"][0]["task"] == "report"
    result = runner.invoke(raters_app, ["add", str(db), "--name", "dr-z"])
    password_z = result.output.split("password: ")[1].strip()
    assert store.verify_password("dr-z", password_z) is not None
    result = runner.invoke(ratings_app, ["load", str(db), str(tmp_path / "items" / "items.jsonl")])
    assert result.exit_code == 0 and "3 already there" in result.output


def test_structure_report_always_has_both_headings():
    assert structure_report("[Findings] Clear lungs. \n [Impression] Normal.")["report"] == "[Findings] Clear lungs. \n [Impression] Normal."
    garbled = structure_report("tok tok zebra")
    assert garbled["findings"] == "tok tok zebra" and garbled["needs_impression"]
    filled = structure_report("tok tok zebra", impression="more tokens")
    assert filled["report"] == "[Findings] tok tok zebra \n [Impression] more tokens" and not filled["needs_impression"]
    assert structure_report("Findings: a\nImpression: b")["impression"] == "b"


def test_items_from_eval_run_folders(tmp_path):
    """Two `medmllm eval run` folders on one benchmark -> open-ended items answered by both, blinded by folder name."""
    from medmllm.data.io import write_samples
    from medmllm.data.templates import get_template

    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "cxr.png")
    def make(name, record):  # sample id = the record's id
        return get_template(name).make(record, 0, paper_prompt=True).model_copy(update={"id": record["id"]})

    samples = [
        make("radbench/report", {"id": "r1", "images": ["cxr.png"], "findings": "The lungs are clear."}),
        make("radbench/vqa", {"id": "q-open", "images": ["cxr.png"], "question": "Where is the opacity?", "answer": "right lower lobe",
                              "answer_type": "open"}),
        make("radbench/vqa", {"id": "q-closed", "images": ["cxr.png"], "question": "Is there an effusion?", "answer": "No",
                              "answer_type": "closed"}),
        make("radbench/report", {"id": "r-failed", "images": ["cxr.png"], "findings": "Normal heart size."}),
    ]
    write_samples(tmp_path / "bench.jsonl", samples)
    for name, rows in {"model-a": [("r1", "Clear lungs."), ("q-open", "Right lower lobe."), ("q-closed", "No"), ("r-failed", "Normal.")],
                       "model-b": [("r1", "Cardiomegaly."), ("q-open", "Left apex."), ("q-closed", "Yes"), ("r-failed", None)]}.items():
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"model": name, "bench": str(tmp_path / "bench.jsonl")}))
        lines = [{"id": i, "prediction": p} if p is not None else {"id": i, "error": "RuntimeError: out of memory"} for i, p in rows]
        (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    store = RatingStore(tmp_path / "r.sqlite")
    assert store.load_runs([tmp_path / "runs" / "model-a", tmp_path / "runs" / "model-b"]) == (2, 0)
    assert store.item_ids() == ["r1", "q-open"]  # closed VQA is not rated; a failed prediction drops the item
    item = store.item("q-open")
    assert item.outputs == {"model-a": "Right lower lobe.", "model-b": "Left apex."} and item.task == "vqa-open"
    assert item.reference == "right lower lobe" and "Where is the opacity?" in item.question
    assert item.images == ((tmp_path / "cxr.png").resolve(),)
    with pytest.raises(MedMLLMError, match="at least two run folders"):
        store.load_runs([tmp_path / "runs" / "model-a"])
    assert len(items_from_runs([tmp_path / "runs" / "model-a", tmp_path / "runs" / "model-b"], per_task=1, seed=3)) == 2
