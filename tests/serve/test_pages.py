"""The web pages in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright), against the real
test server (`served`: the tiny preset, which writes random tokens). Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path(os.environ.get("MEDMLLM_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
TIMEOUT_MS = 90_000  # a draft is two or three generations of the tiny model on one CPU thread

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} not found: the browser tests need Debian's chromium (apt install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need the playwright package (pip install playwright)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Console errors (a blocked script or style breaks the content security policy) fail the test; a refused
    # request (the 401 before signing in) is logged by Chromium as "Failed to load resource" and is expected.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def phantom_nifti(path: Path, slices: int = 10, size: int = 96) -> Path:
    """A CT-like head phantom in HU: air, a skull ring (bone), brain (soft tissue) with a bright spot."""
    import nibabel

    y, x = np.mgrid[:size, :size] - size / 2
    r = np.hypot(y, x) / (size / 2)
    plane = np.where(r < 0.8, 35.0, -1000.0)
    plane[(r >= 0.7) & (r < 0.8)] = 1200.0
    plane[np.hypot(y - 10, x + 12) < 6] = 70.0
    volume = np.stack([plane * (1 - 0.02 * k) for k in range(slices)], axis=-1).astype(np.int16)  # (x, y, z)
    nibabel.save(nibabel.Nifti1Image(volume, np.diag([0.8, 0.8, 5.0, 1.0])), path)
    return path


def study_ids(content) -> list[str]:
    """The study ids of a message's content parts, in order."""
    return [part["study_id"] for part in content if isinstance(part, dict) and part.get("type") == "study"] if isinstance(content, list) else []


def test_clinician_page_upload_view_draft_ask_export(served, page, tmp_path):
    chats, answers = [], []  # the pages' chat requests; the (non-streamed) answers of the real model
    page.on("request", lambda r: chats.append(json.loads(r.post_data)) if r.url.endswith("/v1/chat/completions") else None)
    page.on("response", lambda r: answers.append(r) if r.url.endswith("/v1/chat/completions") and r.request.post_data and
            not json.loads(r.request.post_data).get("stream") else None)

    def sample(route):  # the page decodes greedily; the random tiny model then writes only newlines, so sample instead
        route.continue_(post_data=json.dumps({**json.loads(route.request.post_data), "temperature": 1.0}))

    page.route("**/v1/chat/completions", sample)
    page.goto(served.base_url + "/ui/clinician")
    page.fill("#key-input", served.api_key)  # asked once, kept in sessionStorage
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model:has-text('Model: tiny-model')")

    # Two exams of one patient, uploaded out of time order: the page keeps them in time order.
    later, earlier = phantom_nifti(tmp_path / "later.nii.gz"), phantom_nifti(tmp_path / "earlier.nii.gz", slices=6)
    for path, date in ((later, "2024-03-20"), (earlier, "2024-03-02")):
        page.set_input_files("#upload-file", str(path))
        page.fill("#upload-date", date)
        page.click("#upload-button")
        page.wait_for_selector(f"#upload-status.ok:has-text('{date}')")
    assert page.locator("#exams li .date").all_text_contents() == ["2024-03-02", "2024-03-20"]
    page.click("#exams li:nth-child(2)")
    page.wait_for_function("() => { const i = document.getElementById('slice-image'); return !i.hidden && i.complete && i.naturalWidth > 0 }")
    assert page.locator("#slice-label").text_content() == "slice 5 / 10"

    # Window presets and the slice slider fetch new slices.
    first = page.get_attribute("#slice-image", "src")
    page.click("#windows button[data-window=bone]")
    page.wait_for_function(f"() => document.getElementById('slice-image').src !== {json.dumps(first)}")
    page.locator("#slice").fill("9")
    page.wait_for_selector("#slice-label:has-text('slice 10 / 10')")
    page.wait_for_function("() => document.getElementById('slice-image').alt.startsWith('Slice 10 of 10')")
    page.screenshot(path=str(ARTIFACTS / "clinician-viewer.png"), full_page=True)

    # Draft: the earlier exam first, then the selected one with the earlier exam and its report before it.
    page.click("#draft")
    page.wait_for_selector("#report-status.ok", timeout=TIMEOUT_MS)
    report = page.input_value("#report")
    assert report.startswith("[Findings] ") and "\n [Impression] " in report
    # Whatever the model wrote is under the headings: its answer to the report prompt under Findings (it
    # wrote no headings), its answer to the impression question under Impression.
    texts = [r.json()["choices"][0]["message"]["content"] for r in answers]
    assert len(texts) == 4 and chats[1]["messages"][-1]["content"].startswith("Based on the above, write only the [Impression]")
    expected = f"[Findings] {texts[2].strip()} \n [Impression] {texts[3].strip()}"
    assert report == expected.replace("\r\n", "\n").replace("\r", "\n")  # a text area keeps line breaks as \n
    later_id, earlier_id = (page.get_attribute(f"#exams li:nth-child({k})", "data-study") for k in (2, 1))
    last_draft = [c for c in chats if not c.get("stream") and study_ids(c["messages"][-1]["content"])][-1]
    messages = last_draft["messages"]
    assert [study_ids(m["content"]) for m in messages if m["role"] == "user"] == [[earlier_id], [later_id]]
    assert messages[1]["role"] == "assistant" and messages[1]["content"].startswith("[Findings] ")
    assert "Current radiological data is as follows:" in messages[0]["content"][0]["text"]
    page.screenshot(path=str(ARTIFACTS / "clinician-report.png"), full_page=True)

    # A follow-up question: answered in the chat, with the exams and reports before it.
    page.fill("#question", "Is there a change since the earlier exam?")
    page.click("#ask")
    page.wait_for_selector("#chat .message.assistant")
    page.wait_for_function("() => !document.getElementById('ask').disabled")
    assert page.locator("#chat .message").count() == 2
    assert page.locator("#ask-status").text_content() == ""
    question = chats[-1]
    assert question["stream"] and question["messages"][-1] == {"role": "user", "content": "Is there a change since the earlier exam?"}
    assert [m["role"] for m in question["messages"]] == ["user", "assistant", "user", "assistant", "user"]

    # Export: the report as a .txt download.
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "report.txt"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "report-2024-03-20.txt"
    assert saved.read_text() == report + "\n"
    page.screenshot(path=str(ARTIFACTS / "clinician-chat.png"), full_page=True)


def test_clinician_page_asks_again_for_a_refused_key(served, page):
    page.goto(served.base_url + "/ui/clinician")
    page.fill("#key-input", "mk-not-a-key")
    page.click("#key-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('key-dialog').open && document.getElementById('key-input').placeholder.includes('refused')")
    assert page.evaluate("sessionStorage.getItem('medmllm_api_key')") is None


def test_rating_page_sign_in_rate_and_reload(served, page, tmp_path):
    from PIL import Image

    from medmllm.serve.ratings import RatingStore

    db_path = served.data_dir / "ratings.sqlite"
    store = RatingStore(db_path)
    password = store.add_rater("dr-browser")
    Image.fromarray((np.indices((64, 64)).sum(axis=0) * 2).astype(np.uint8)).save(tmp_path / "xray.png")
    phantom_nifti(tmp_path / "ct.nii.gz")
    outputs = {"model-a": "The lungs are clear.", "model-b": "Right lower lobe consolidation.", "model-c": "zebra zebra"}
    item = {"id": "browser-case-1", "images": ["xray.png", "ct.nii.gz"], "question": "Please write the findings.",
            "reference": "Findings: mild right lower lobe opacity.", "outputs": outputs, "task": "report"}
    (tmp_path / "items.jsonl").write_text(json.dumps(item) + "\n")
    store.load_items(tmp_path / "items.jsonl")
    n = store.item_ids().index("browser-case-1")

    page.goto(served.base_url + "/ui/rating")
    page.wait_for_selector("#signin-panel:not([hidden])")
    page.fill("#signin-name", "dr-browser")
    page.fill("#signin-password", "wrong password")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-status.error:has-text('Wrong name or password')")
    page.fill("#signin-password", password)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#rating-panel:not([hidden])")
    page.click(f"#item-list li:nth-child({n + 1}) button")
    page.wait_for_selector("#question:has-text('Please write the findings.')")
    page.wait_for_function("() => [...document.querySelectorAll('#images img')].every((i) => i.complete && i.naturalWidth > 0)")
    assert page.locator("#images img").count() == 2
    assert page.locator("#reference").text_content() == item["reference"]
    assert page.locator("#rubric dt").all_text_contents()[0] == "0 · Garbled"
    body = page.locator("body").inner_text()
    assert not any(name in body for name in outputs)  # blinded
    shown = page.locator("#outputs .output .prose").all_text_contents()
    assert sorted(shown) == sorted(outputs.values())

    page.click("#outputs .output:nth-child(2) label.score:has-text('4')")
    page.wait_for_selector("#rating-status.ok:has-text('Saved: output 2')")
    page.screenshot(path=str(ARTIFACTS / "rating.png"), full_page=True)
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT raters.name, ratings.item_id, ratings.model, ratings.score, ratings.time FROM ratings "
                      "JOIN raters ON raters.id = ratings.rater_id WHERE raters.name = 'dr-browser'").fetchall()
    model = next(m for m, text in outputs.items() if text == shown[1])
    assert [row[:4] for row in rows] == [("dr-browser", "browser-case-1", model, 4)] and rows[0][4]

    # Reload: the same order, the score kept; the cookie is HttpOnly (not visible to scripts).
    page.reload()
    page.click(f"#item-list li:nth-child({n + 1}) button")
    page.wait_for_selector("#question:has-text('Please write the findings.')")
    assert page.locator("#outputs .output .prose").all_text_contents() == shown
    assert page.locator("#outputs .output:nth-child(2) input[value='4']").is_checked()
    assert "medmllm_rater" not in page.evaluate("document.cookie")
