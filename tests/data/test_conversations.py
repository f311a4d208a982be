"""Conversations: P2Med's multi-round conversations and their inverse, RadFM's interleaved text,
and a template's sample through `Sample.to_messages` and the tiny model's processor."""

from __future__ import annotations

import numpy as np
import pytest

from medmllm.data.conversations import chronological, interleaved, multi_round, single_round, split_conversation
from medmllm.data.schema import ImagePart, ImageRef, Sample, TextPart, text_turn
from medmllm.data.templates import ImageStudy, get_template
from medmllm.errors import MedMLLMError


def xray(id: str, time: str | None, *, views: int = 1, patient: str = "p-1", visit: str = "v-1", split: str = "train") -> ImageStudy:
    return ImageStudy(
        id=id, images=[f"{id}-{k}.png" for k in range(views)], modality="X-ray", time=time, patient_id=patient, visit_id=visit,
        split=split, findings=f"findings of {id}", impression=f"impression of {id}",
    )


def report(study: ImageStudy, template: str = "p2med/report-xray") -> Sample:
    return get_template(template).make(study, 0)


# ------------------------------------------------------------------------------ multi-round


def test_multi_round_groups_one_modality_of_one_visit_in_time_order():
    later, first, middle = xray("b", "2022-11-02", views=2), xray("a", "2022-10-29"), xray("c", "2022-10-30T08:00")
    other_visit = xray("d", "2022-10-30", visit="v-2")
    ct = report(ImageStudy(id="e", images=["e.npy"], modality="CT", time="2022-10-31", patient_id="p-1", visit_id="v-1",
                           findings="ct findings", impression="ct impression"), "p2med/report-ct")
    samples = [report(later), report(other_visit), ct, report(first), report(middle)]
    conversations = multi_round(samples)

    assert [c.id for c in conversations] == ["mrc/p2med/report-xray/p-1/v-1/X-ray", "d/p2med/report-xray", "e/p2med/report-ct"]
    merged = conversations[0]
    assert conversations[1] == samples[1] and conversations[2] == ct  # groups of one are left as they are
    assert [t.role for t in merged.turns] == ["user", "assistant"] * 3
    assert [t.text for t in merged.turns[1::2]] == [f"[Findings] findings of {x} \n [Impression] impression of {x}" for x in "acb"]
    # Images in round order, each round's parts pointing at its own exam's images.
    assert [ref.path for ref in merged.images] == ["a-0.png", "c-0.png", "b-0.png", "b-1.png"]
    refs = [[merged.images[p.image].path for p in t.content if isinstance(p, ImagePart)] for t in merged.turns[0::2]]
    assert refs == [["a-0.png"], ["c-0.png"], ["b-0.png", "b-1.png"]]
    # The last exam is the one scored; every round's targets stay in meta.
    assert merged.targets == {"findings": "findings of b", "impression": "impression of b"}
    assert [r["id"] for r in merged.meta["rounds"]] == ["a/p2med/report-xray", "c/p2med/report-xray", "b/p2med/report-xray"]
    assert [r["targets"]["impression"] for r in merged.meta["rounds"]] == ["impression of a", "impression of c", "impression of b"]
    assert (merged.patient_id, merged.visit_id, merged.split, merged.task) == ("p-1", "v-1", "train", "p2med/report-xray")
    assert Sample.from_json(merged.to_json()) == merged
    # Deterministic: the same input gives the same conversation, whatever the order it came in.
    again = multi_round([samples[4], samples[3], samples[0]])
    assert again[0].to_json() == merged.to_json()
    # The processor's exam order follows time.
    messages = merged.to_messages()
    assert [p["exam_index"] for m in messages for p in m["content"] if p["type"] == "image"] == [0, 1, 2, 2]


def test_split_conversation_inverts_multi_round():
    originals = [report(xray("b", "2022-11-02", views=2)), report(xray("a", "2022-10-29")), report(xray("c", "2022-10-30"))]
    (merged,) = multi_round(originals)
    assert split_conversation(merged) == chronological(originals) == [originals[1], originals[2], originals[0]]

    # Round k with the earlier rounds as context: what the model sees when it writes report k.
    with_context = split_conversation(merged, context=True)
    assert [s.id for s in with_context] == [s.id for s in chronological(originals)]
    assert [len(s.turns) for s in with_context] == [2, 4, 6]
    assert [len(s.images) for s in with_context] == [1, 2, 4]
    assert with_context[-1].turns == merged.turns and with_context[-1].images == merged.images
    assert with_context[1].meta["context_rounds"] == 1 and with_context[1].targets == originals[2].targets
    # Only the round just before: round 3 with round 2 (its images renumbered from 0), round 1 alone.
    one_before = split_conversation(merged, context=1)
    assert [len(s.turns) for s in one_before] == [2, 4, 4] and [len(s.images) for s in one_before] == [1, 2, 3]
    assert [t.text for t in one_before[2].turns] == [t.text for t in merged.turns[2:]] and one_before[2].images == merged.images[1:]
    assert [s.meta.get("context_rounds") for s in one_before] == [None, 1, 1] and one_before[:2] == with_context[:2]
    assert split_conversation(merged, context=0) == split_conversation(merged)
    # A one-round sample is its own split.
    assert split_conversation(originals[0]) == [originals[0]]


def test_split_conversation_without_saved_rounds():
    sample = Sample(
        id="chat", task="radbench/vqa", images=[ImageRef(path="x.png"), ImageRef(path="y.png")],
        turns=[text_turn("system", "Be brief."), {"role": "user", "content": [{"type": "image", "image": 1}, {"type": "text", "text": "CT?"}]},
               text_turn("assistant", "yes"), {"role": "user", "content": [{"type": "image", "image": 0}, {"type": "text", "text": "MRI?"}]},
               text_turn("assistant", "no")],
        targets={"answer": "no"},
    )
    first, second = split_conversation(sample)
    assert (first.id, second.id) == ("chat#1", "chat#2")
    assert [t.role for t in first.turns] == ["system", "user", "assistant"] and first.images == [ImageRef(path="y.png")]
    assert first.turns[1].content[0] == ImagePart(image=0) and first.targets == {}
    assert second.images == [ImageRef(path="x.png")] and second.targets == {"answer": "no"}


def test_time_order_rules():
    a, b, c, d = (report(xray(i, t)) for i, t in (("a", "2022-10-02"), ("b", None), ("c", "2022-10-01"), ("d", "2022-10-01")))
    # Timed exams are sorted around the untimed one, which keeps its place; equal times keep input order.
    assert [s.id[0] for s in chronological([a, b, c, d])] == ["c", "b", "d", "a"]
    assert [s.id[0] for s in chronological([d, c])] == ["d", "c"]
    # Time zones are compared in UTC; dates before date-times of the same day.
    z1 = report(xray("z", "2022-10-01T10:00+02:00"))
    z2 = report(xray("y", "2022-10-01T09:00Z"))
    day = report(xray("x", "2022-10-01"))
    assert [s.id[0] for s in chronological([z2, z1, day])] == ["x", "z", "y"]
    with pytest.raises(MedMLLMError, match="'bad' is not ISO 8601"):
        chronological([report(xray("q", "bad"))])


def test_multi_round_from_studies_and_samples_without_a_visit_stay_alone():
    studies = [xray("b", "2022-11-02"), xray("a", "2022-10-29"),
               ImageStudy(id="m", images=["m.nii.gz"], modality="MR", findings="f", impression="i", patient_id="p-1", visit_id="v-1")]
    with pytest.raises(MedMLLMError, match="no report template for modality 'MRI'"):
        multi_round(studies)
    (merged,) = multi_round(studies[:2], paper_prompt=True)
    assert merged.turns[0].content[0] == TextPart(text="Current radiological data is as follows: \n ")
    assert [r["id"] for r in merged.meta["rounds"]] == ["a/p2med/report-xray", "b/p2med/report-xray"]
    no_visit = [report(xray("a", "2022-10-29", visit=None)), report(xray("b", "2022-10-30", visit=None))]
    assert multi_round(no_visit) == no_visit
    # group_by by patient only: the two visits become one conversation.
    assert len(multi_round(no_visit, group_by=("patient_id", "modality"))) == 1


def test_multi_round_refuses_mixed_splits_and_system_prompts():
    with pytest.raises(MedMLLMError, match="different splits"):
        multi_round([report(xray("a", "2022-10-29")), report(xray("b", "2022-10-30", split="test"))])
    a, b = report(xray("a", "2022-10-29")), report(xray("b", "2022-10-30"))
    a = a.model_copy(update={"turns": [text_turn("system", "You are a radiologist."), *a.turns]})
    with pytest.raises(MedMLLMError, match="system turns differ"):
        multi_round([a, b])
    # An earlier exam without its report cannot be followed by later ones.
    prompt_only = get_template("p2med/report-xray").make(xray("a", "2022-10-29"), answer=False)
    with pytest.raises(MedMLLMError, match="ends without an assistant turn"):
        multi_round([prompt_only, b])
    # ... but the last one may be a prompt: the conversation to evaluate its report.
    (merged,) = multi_round([report(xray("a", "2022-10-29")), get_template("p2med/report-xray").make(xray("c", "2022-10-31"), answer=False)])
    assert [t.role for t in merged.turns] == ["user", "assistant", "user"] and merged.targets["impression"] == "impression of c"
    assert [s.id for s in split_conversation(merged)] == ["a/p2med/report-xray", "c/p2med/report-xray"]


# ------------------------------------------------------------------------------ interleaved


def test_interleaved_places_images_where_their_placeholders_are():
    images = [ImageRef(path="one.png"), "two.nii.gz"]
    sample = interleaved("The patient is 47-year-old. <image-1> <image-2> We can see opacity on the X-ray", images,
                         id="pmc-1", answer="Pneumonia.")
    assert sample.turns[0].content == [TextPart(text="The patient is 47-year-old. "), ImagePart(image=0), TextPart(text=" "),
                                       ImagePart(image=1), TextPart(text=" We can see opacity on the X-ray")]
    assert [r.path for r in sample.images] == ["one.png", "two.nii.gz"] and sample.turns[1].text == "Pneumonia."
    # Out of order and repeated placeholders refer to the numbered image.
    swapped = interleaved("<image-2>then<image-1><image-2>", images, id="s", role="assistant")
    assert [p.image for p in swapped.turns[0].content if isinstance(p, ImagePart)] == [1, 0, 1]
    assert [t.role for t in swapped.turns] == ["assistant"] and Sample.from_json(swapped.to_json()) == swapped


def test_interleaved_mismatches_raise():
    with pytest.raises(MedMLLMError, match=r"placeholder\(s\) <image-3> but 2 image\(s\) given"):
        interleaved("<image-1> <image-2> <image-3>", ["a.png", "b.png"], id="x", answer="a")
    with pytest.raises(MedMLLMError, match=r"image\(s\) \[2\] have no placeholder"):
        interleaved("<image-1> only", ["a.png", "b.png"], id="x", answer="a")
    with pytest.raises(MedMLLMError, match="<image-0>"):
        interleaved("<image-0>", ["a.png"], id="x", answer="a")
    with pytest.raises(MedMLLMError, match="no assistant turn and no targets"):
        interleaved("<image-1>", ["a.png"], id="x")


def test_single_round():
    sample = single_round(["Please caption this scan with findings. ", ImageRef(path="cxr.png")], "Clear lungs.",
                          id="s1", task="radbench/report", targets={"findings": "Clear lungs."}, system="Be brief.")
    assert [t.role for t in sample.turns] == ["system", "user", "assistant"]
    assert sample.turns[1].content == [TextPart(text="Please caption this scan with findings. "), ImagePart(image=0)]
    assert single_round("Is it CT?", None, id="s2", task="t", split="test").turns[-1].role == "user"


# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_processor():
    import torch

    from medmllm.model.factory import build

    torch.manual_seed(0)
    _, processor = build("tiny")
    return processor


def test_template_samples_through_to_messages_and_the_tiny_processor(tmp_path, tiny_processor):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a-0", "a-1", "b-0"):
        Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    np.save(tmp_path / "ct.npy", rng.random((10, 24, 24), dtype=np.float32))

    two_views = report(xray("a", "2022-10-29", views=2))
    conversation = multi_round([report(xray("b", "2022-11-02")), two_views])[0]
    ct = get_template("radbench/modality-open").make(ImageStudy(id="ct", images=["ct.npy"], modality="CT"), 0)
    samples = [two_views, conversation, ct]
    batch = tiny_processor([s.to_messages(tmp_path) for s in samples])

    assert batch["image_mask"].sum(dim=1).tolist() == [len(s.images) for s in samples] == [2, 3, 1]
    assert batch["pixel_values"].shape[:2] == (3, 3)
    assert batch["image_exam_index"][1].tolist() == [0, 0, 1]  # a's two views, then b
    texts = tiny_processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=False)
    # One exam header per exam: two views share one; RadBench writes none (it would give the modality away).
    assert [t.count("[Examination modality]") for t in texts] == [1, 2, 0]
    assert "[Examination time] 2022-10-29 \n [Examination modality] X-ray \n [Image] <image>" in texts[0]
    # Only the reports are learned.
    assert (batch["labels"][0] != -100).any()
