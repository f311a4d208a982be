"""Keys, body limits, upload type checks, zip traversal, id validation, logs without identifiers, CORS."""

from __future__ import annotations

import io
import logging
import stat
import time
import zipfile

import httpx
import openai
import pytest

from medmllm.errors import MedMLLMError
from medmllm.serve.auth import APIKeyAuth, add_key, hash_key, load_key_hashes
from tests.serve.conftest import BODY_LIMIT, MODEL_ID, UPLOAD_LIMIT
from tests.serve.test_api import auth, dicom_zip, upload


def test_every_route_but_health_needs_a_valid_key(served):
    study_routes = ["/v1/models", "/v1/engine/stats", f"/v1/studies/{'0' * 32}", f"/v1/studies/{'0' * 32}/slices/0.png"]
    for headers in ({}, {"Authorization": "Bearer mk-wrong"}, {"Authorization": served.api_key}, {"Authorization": "Basic x"}):
        for route in study_routes:
            response = httpx.get(served.base_url + route, headers=headers)
            assert response.status_code == 401, (route, headers)
            assert response.headers["www-authenticate"] == "Bearer"
        chat = httpx.post(f"{served.base_url}/v1/chat/completions", headers=headers,
                          json={"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 401
    assert httpx.get(f"{served.base_url}/v1/models", headers=auth(served)).status_code == 200
    assert httpx.get(f"{served.base_url}/healthz").status_code == 200
    wrong = openai.OpenAI(base_url=served.base_url + "/v1", api_key="mk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_keys_file_holds_hashes_only(tmp_path):
    path = tmp_path / "keys.txt"
    first, second = add_key(path, "alice"), add_key(path)
    text = path.read_text()
    assert first not in text and second not in text and hash_key(first) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    checker = APIKeyAuth(load_key_hashes(path))
    assert checker.verify(first) and checker.verify(second) and not checker.verify(first + "x")
    path.write_text("not-a-hash\n")
    with pytest.raises(MedMLLMError, match="line 1"):
        load_key_hashes(path)


def test_oversize_bodies_get_413_declared_or_streamed(served):
    big = b'{"model": "x", "messages": [], "pad": "' + b"a" * BODY_LIMIT + b'"}'
    declared = httpx.post(f"{served.base_url}/v1/chat/completions", headers={**auth(served), "Content-Type": "application/json"}, content=big)
    assert declared.status_code == 413

    def chunks():  # no Content-Length: counted while it streams
        for k in range(0, len(big), 65536):
            yield big[k : k + 65536]

    streamed = httpx.post(f"{served.base_url}/v1/chat/completions", headers={**auth(served), "Content-Type": "application/json"}, content=chunks())
    assert streamed.status_code == 413
    upload_too_big = upload(served, b"\x89PNG\r\n\x1a\n" + b"\0" * UPLOAD_LIMIT)
    assert upload_too_big.status_code == 413
    # The same size is fine for an upload under its own limit: only unreadable (422), not too large.
    assert upload(served, b"\x89PNG\r\n\x1a\n" + b"\0" * (BODY_LIMIT + 10)).status_code == 422


def test_uploads_are_type_checked_by_content(served, tmp_path):
    text = upload(served, b"Patient: Jane Doe\nnot a scan\n", name="scan.nii.gz")
    assert text.status_code == 415
    assert upload(served, b"").status_code == 422
    broken_png = upload(served, b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, name="x.png")
    assert broken_png.status_code == 422 and "cannot be read" in broken_png.json()["error"]["message"]
    assert "/tmp" not in broken_png.text  # no server path in messages
    not_dicom_zip = io.BytesIO()
    with zipfile.ZipFile(not_dicom_zip, "w") as zf:
        zf.writestr("notes.txt", "hello")
    assert upload(served, not_dicom_zip.getvalue()).status_code == 422


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/evil", "..\\evil", "C:/evil"])
def test_zip_member_leaving_its_folder_is_refused(served, tmp_path, name):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ok.dcm", b"\0" * 10)
        zf.writestr(name, b"payload")
    before = set((served.data_dir / "studies").iterdir())
    response = upload(served, buffer.getvalue())
    assert response.status_code == 422 and "refused" in response.json()["error"]["message"]
    assert set((served.data_dir / "studies").iterdir()) == before


def test_zip_symlinks_and_bombs_are_refused(served, tmp_path):
    from medmllm.serve.limits import Limits
    from medmllm.serve.studies import UploadError, extract_zip

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    assert upload(served, buffer.getvalue()).status_code == 422

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * (4 * 2**20))
    with pytest.raises(UploadError, match="unpacks to more"):
        extract_zip(bomb, tmp_path / "out", Limits(max_unzipped_bytes=2**20))


@pytest.mark.parametrize("study_id", ["..", "0" * 31 + "g", "0" * 33, "ABCDEF0123456789ABCDEF0123456789", "%2e%2e%2fkeys.txt"])
def test_malformed_study_ids_never_reach_the_disk(served, study_id):
    for route in (f"/v1/studies/{study_id}", f"/v1/studies/{study_id}/slices/0.png"):
        assert httpx.get(served.base_url + route, headers=auth(served)).status_code == 404


def test_logs_carry_no_identifier(served, head_ct, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="medmllm.serve")
    response = upload(served, dicom_zip(head_ct, tmp_path, patient_name="ROE^RICHARD", patient_id="MRN-778899"), name="ROE RICHARD.zip")
    assert response.status_code == 200
    for _ in range(100):  # the line is written just after the response has gone out
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("medmllm")]
        if any("POST /v1/studies 200" in line for line in lines):
            break
        time.sleep(0.02)
    assert any("POST /v1/studies 200" in line for line in lines)
    assert not any(s in line for line in lines for s in ("ROE", "RICHARD", "778899", served.api_key))


def test_cors_is_off_unless_origins_are_listed(served):
    from fastapi.testclient import TestClient

    from medmllm.model.factory import build
    from medmllm.serve.app import create_app

    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    response = httpx.options(f"{served.base_url}/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    model, processor = build("tiny")
    app = create_app(model=model, processor=processor, api_keys=None, data_dir=served.data_dir.parent / "cors", cors_origins=["https://pacs.local"])
    with TestClient(app) as test_client:
        allowed = test_client.options("/v1/models", headers={**preflight, "Origin": "https://pacs.local"})
        assert allowed.headers["access-control-allow-origin"] == "https://pacs.local"
        refused = test_client.options("/v1/models", headers=preflight)
        assert "access-control-allow-origin" not in refused.headers
