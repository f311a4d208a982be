"""The OpenAI-compatible API with the real `openai` client against a running server (tiny model)."""

from __future__ import annotations

import io
import zipfile

import httpx
import numpy as np
import openai
import pytest

from tests.serve.conftest import MODEL_ID, png_data_uri


def auth(served) -> dict:
    return {"Authorization": f"Bearer {served.api_key}"}


def upload(served, path_or_bytes, name="upload", **fields) -> httpx.Response:
    data = path_or_bytes.read_bytes() if hasattr(path_or_bytes, "read_bytes") else path_or_bytes
    return httpx.post(f"{served.base_url}/v1/studies", headers=auth(served), files={"file": (name, data)}, data=fields, timeout=120)


def dicom_zip(head_ct, tmp_path, patient_name="DOE^JANE", patient_id="PID-12345") -> bytes:
    """The head CT, downsampled to (14, 64, 64), as a zipped DICOM series with a patient's name in it."""
    from medmllm.scans.write import write_dicom_series

    voxels = head_ct.voxels[::8, ::4, ::4]
    spacing = (head_ct.spacing[0] * 8, head_ct.spacing[1] * 4, head_ct.spacing[2] * 4)
    paths = write_dicom_series(voxels, spacing, tmp_path / "series", patient_name=patient_name, patient_id=patient_id,
                               series_description=f"Head {patient_name.split('^')[0]}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for p in paths:
            zf.write(p, f"{patient_name}/series1/{p.name}")  # folder names that identify someone, as real exports have
    return buffer.getvalue()


def chat(client, content, **kwargs):
    kwargs = {"max_tokens": 8, "temperature": 0, **kwargs}
    return client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": content}], **kwargs)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]


def test_chat_with_a_png_data_uri_counts_the_image_tokens(client):
    text = [{"type": "text", "text": "Please caption this scan with findings."}]
    with_image = chat(client, [{"type": "image_url", "image_url": {"url": png_data_uri()}}, *text])
    without = chat(client, text)
    choice = with_image.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= with_image.usage.completion_tokens <= 8
    assert with_image.usage.total_tokens == with_image.usage.prompt_tokens + with_image.usage.completion_tokens
    # <image> + 4 x <image_patch> (tiny preset) + </image>
    assert with_image.usage.prompt_tokens - without.usage.prompt_tokens == 6


def test_streaming_gives_the_same_text_as_one_reply(client):
    content = [{"type": "image_url", "image_url": {"url": png_data_uri(1)}}, {"type": "text", "text": "The lungs are"}]
    whole = chat(client, content, max_tokens=12)
    stream = chat(client, content, max_tokens=12, stream=True, stream_options={"include_usage": True})
    pieces, reasons, usage = [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    assert "".join(pieces) == whole.choices[0].message.content
    assert reasons[-1] == whole.choices[0].finish_reason and all(r is None for r in reasons[:-1])
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_stop_string_cuts_the_reply_before_it(client):
    content = "Patchy consolidation in the right lower lobe"
    full = chat(client, content, max_tokens=16).choices[0].message.content
    if len(full) < 4:
        pytest.skip("the random model answered too little to cut")
    stop = full[2:4]
    cut = chat(client, content, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in chat(client, content, max_tokens=16, stop=stop, stream=True) if c.choices)
    assert streamed == full[: full.index(stop)]


def test_upload_nifti_then_metadata_slices_and_chat(served, client, head_ct_path):
    response = upload(served, head_ct_path, name="Jane Doe head.nii.gz", time="2022-10-29")
    assert response.status_code == 200, response.text
    study = response.json()
    assert len(study["id"]) == 32 and study["modality"] == "CT" and study["shape"] == [108, 256, 256]
    assert study["time"] == "2022-10-29" and study["features_cached"] is True
    assert "Jane" not in response.text  # the file name is never kept
    meta = httpx.get(f"{served.base_url}/v1/studies/{study['id']}", headers=auth(served)).json()
    assert meta["shape"] == [108, 256, 256] and meta["features_cached"] is True
    assert list((served.data_dir / "studies" / study["id"]).glob("features-*.safetensors"))

    from PIL import Image

    for window in ("brain", "bone", None):
        png = httpx.get(f"{served.base_url}/v1/studies/{study['id']}/slices/54.png", params={"window": window} if window else {},
                        headers=auth(served))
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(png.content))
        assert image.size == (256, 256)
    brain = np.asarray(Image.open(io.BytesIO(httpx.get(f"{served.base_url}/v1/studies/{study['id']}/slices/54.png?window=brain",
                                                         headers=auth(served)).content)))
    bone = np.asarray(Image.open(io.BytesIO(httpx.get(f"{served.base_url}/v1/studies/{study['id']}/slices/54.png?window=bone",
                                                        headers=auth(served)).content)))
    assert not np.array_equal(brain, bone)
    missing = httpx.get(f"{served.base_url}/v1/studies/{study['id']}/slices/108.png", headers=auth(served))
    assert missing.status_code == 404

    reply = chat(client, [{"type": "study", "study_id": study["id"]}, {"type": "text", "text": "Please caption this scan with findings."}])
    assert reply.choices[0].message.content is not None
    # The exam header ([Examination time] 2022-10-29 ... [Examination modality] CT ... [Image]) is in the prompt.
    bare = chat(client, [{"type": "image_url", "image_url": {"url": png_data_uri()}}, {"type": "text", "text": "Please caption this scan with findings."}])
    assert reply.usage.prompt_tokens > bare.usage.prompt_tokens


def test_upload_zipped_dicom_is_deidentified_and_answers_chats(served, client, head_ct, tmp_path):
    response = upload(served, dicom_zip(head_ct, tmp_path), name="DOE^JANE.zip")
    assert response.status_code == 200, response.text
    study = response.json()
    assert study["format"] == "dicom" and study["modality"] == "CT" and study["shape"] == [14, 64, 64]
    assert study["time"] is None  # the acquisition date is never kept
    stored = served.data_dir / "studies" / study["id"]
    for path in stored.iterdir():
        data = path.read_bytes()
        if path.suffix == ".gz":
            import gzip

            data = gzip.decompress(data)
        for secret in (b"DOE", b"JANE", b"PID-12345", b"20200101"):
            assert secret not in data, (path.name, secret)
    # The voxels survive the round trip (int16 storage, rescale -1024).
    from medmllm.scans import read

    np.testing.assert_allclose(read(stored / "scan.nii.gz").voxels, np.round(head_ct.voxels[::8, ::4, ::4]), atol=0.5)

    by_part = chat(client, [{"type": "study", "study_id": study["id"], "exam": 0}, {"type": "text", "text": "Findings?"}])
    by_url = chat(client, [{"type": "image_url", "image_url": {"url": f"study://{study['id']}"}}, {"type": "text", "text": "Findings?"}])
    assert by_part.choices[0].message.content == by_url.choices[0].message.content
    assert by_part.usage == by_url.usage


def test_files_endpoint_takes_uploads_from_the_openai_client(client, head_ct_path):
    created = client.files.create(file=("scan.nii.gz", head_ct_path.read_bytes()), purpose="user_data")
    assert len(created.id) == 32 and created.object == "file"


def test_unknown_study_and_bad_parts_are_clear_errors(client):
    with pytest.raises(openai.NotFoundError):
        chat(client, [{"type": "study", "study_id": "0" * 32}])
    with pytest.raises(openai.BadRequestError, match="fetches no URL"):
        chat(client, [{"type": "image_url", "image_url": {"url": "https://example.org/x.png"}}])
    with pytest.raises(openai.BadRequestError):
        chat(client, [{"type": "input_audio", "input_audio": {}}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        chat(client, "hi", max_tokens=10**6)


def test_health_and_openapi_schema_need_no_key(served):
    assert httpx.get(f"{served.base_url}/healthz").json()["status"] == "ok"
    schema = httpx.get(f"{served.base_url}/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/studies" in schema["paths"]


def test_deleting_a_study_removes_its_files(served, client, head_ct_path):
    study = upload(served, head_ct_path).json()
    folder = served.data_dir / "studies" / study["id"]
    assert folder.is_dir()
    deleted = httpx.delete(f"{served.base_url}/v1/studies/{study['id']}", headers=auth(served))
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert not folder.exists()
    assert httpx.get(f"{served.base_url}/v1/studies/{study['id']}", headers=auth(served)).status_code == 404
    with pytest.raises(openai.NotFoundError):
        chat(client, [{"type": "study", "study_id": study["id"]}])
