"""The Sample format: validation, canonical round trip, streaming io, messages for the processor."""

from __future__ import annotations

import pytest

from medmllm.data import ImagePart, ImageRef, Sample, TextPart, Turn, read_samples, text_turn, write_samples
from medmllm.errors import MedMLLMError


def xray_sample(i=0) -> Sample:
    return Sample(
        id=f"s{i}", task="p2med/report-xray",
        turns=[Turn(role="user", content=[TextPart(text="Current radiological data is as follows: \n "), ImagePart(image=0), ImagePart(image=1),
                                          TextPart(text="\n generate a report")]),
               text_turn("assistant", "[Findings] Clear. \n [Impression] Normal.")],
        images=[ImageRef(path="a.png", modality="X-ray", view="AP", time="2022-10-29", exam="e1"),
                ImageRef(path="b.png", modality="X-ray", view="LAT", time="2022-10-29", exam="e1")],
        patient_id="p1", targets={"findings": "Clear.", "impression": "Normal."}, labels={"diseases": []}, split="train",
    )


def test_canonical_round_trip_is_exact(tmp_path):
    samples = [xray_sample(i) for i in range(3)]
    path = tmp_path / "s.jsonl"
    write_samples(path, samples)
    first = path.read_bytes()
    assert list(read_samples(path)) == samples
    write_samples(tmp_path / "again.jsonl", read_samples(path))
    assert (tmp_path / "again.jsonl").read_bytes() == first


@pytest.mark.parametrize("line,message", [
    ('{"id": "x", "task": "t", "turns": []}', "turns: List should have at least 1 item"),
    ('{"id": "x", "task": "t", "turns": [{"role": "doctor", "content": []}]}', "turns.0.role"),
    ('{"id": "x", "task": "t", "turns": [{"role": "user", "content": [{"type": "image", "image": 0}]}]}', "refers to image 0 but the sample has 0"),
    ('{"id": "x", "task": "t", "turns": [{"role": "user", "content": [{"type": "text", "text": "q"}]}], "images": [{"path": "a.png"}], "targets": {"a": "b"}}',
     "images \\[0\\] are never referred to"),
    ('{"id": "x", "task": "t", "turns": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}', "nothing to learn or to score"),
    ('{"id": "x", "task": "t", "turn": []}', "Field required"),
    ('{"id": "", "task": "t", "turns": [{"role": "assistant", "content": [{"type": "text", "text": "a"}]}]}', "id: Value error, must not be empty"),
    ('not json', "Invalid JSON"),
])
def test_bad_lines_name_file_line_and_problem(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(xray_sample().to_json() + "\n\n" + line + "\n")
    with pytest.raises(MedMLLMError, match=f"{path}:3: .*{message}"):
        list(read_samples(path))
    errors = []
    assert len(list(read_samples(path, skip_invalid=True, errors=errors))) == 1 and len(errors) == 1


def test_messages_give_one_exam_header_per_exam_in_time_order(tmp_path):
    sample = xray_sample()
    sample.images.append(ImageRef(path="c.png", modality="X-ray", view="AP", time="2022-11-11", exam="e2"))
    sample.turns.append(Turn(role="user", content=[ImagePart(image=2), TextPart(text="again")]))
    sample.turns.append(text_turn("assistant", "[Findings] Better. \n [Impression] Resolved."))
    messages = sample.to_messages(tmp_path)
    images = [p for m in messages for p in m["content"] if p["type"] == "image"]
    assert [p["exam_index"] for p in images] == [0, 0, 1]
    assert [("time" in p, "modality" in p) for p in images] == [(True, True), (False, False), (True, True)]
    assert images[0]["image"] == str(tmp_path / "a.png")


def test_binary_file_is_one_clear_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(xray_sample().to_json().encode() + b"\n\xff\xfe\x00garbage\n")
    with pytest.raises(MedMLLMError, match="not UTF-8 text"):
        list(read_samples(path))
