"""Dataset formats: small files in each published layout -> samples, field by field; round trips;
malformed records reported with their location; missing images reported, never dropped silently."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from medmllm.data import ImagePart, ImageRef, Sample, TextPart, Turn, read_samples, text_turn, write_samples
from medmllm.data.formats import EXPORTERS, IMPORTERS, MissingImages, export_samples, import_samples
from medmllm.data.templates import parse_report
from medmllm.errors import MedMLLMError

REPO = Path(__file__).resolve().parents[2]


def png(path: Path, value: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), value).save(path)
    return path


def png_bytes(value: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), value).save(buf, "PNG")
    return buf.getvalue()


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def user_parts(sample: Sample) -> list:
    return [(p.type, p.image if isinstance(p, ImagePart) else p.text) for p in sample.turns[0].content]


# -- registry --------------------------------------------------------------------------------------


def test_registry_lists_every_format():
    assert set(IMPORTERS) == {"medmllm", "llava", "sharegpt", "vqa-rad", "slake", "pathvqa", "pmc-vqa", "r2gen", "radfm-csv", "hf"}
    assert set(EXPORTERS) == {"medmllm", "llava", "sharegpt"}


def test_unknown_format_lists_the_known_ones(tmp_path):
    with pytest.raises(MedMLLMError, match=r"unknown import format 'nope'; known: .*llava.*vqa-rad"):
        import_samples("nope", tmp_path / "x.json")
    with pytest.raises(
        MedMLLMError, match=r"unknown export format 'vqa-rad' \('vqa-rad' can only be imported\); known: llava, medmllm, sharegpt"
    ):
        export_samples("vqa-rad", [], tmp_path / "x.json")


def test_unknown_option_names_the_options(tmp_path):
    with pytest.raises(MedMLLMError, match=r"format 'slake' has no option 'langauge'; its options: image_root, relative_to, source, lang"):
        import_samples("slake", tmp_path, langauge="zh")


# -- LLaVA -----------------------------------------------------------------------------------------


@pytest.fixture
def llava_file(tmp_path):
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b.png", 255)
    records = [
        {
            "id": "pmc-1",
            "image": ["imgs/a.png", "imgs/b.png"],
            "conversations": [
                {"from": "human", "value": "<image>\nCompare with <image>."},
                {"from": "gpt", "value": "The second shows a mass."},
                {"from": "human", "value": "Which lobe?"},
                {"from": "gpt", "value": "Left upper lobe."},
            ],
            "modality": "Computed Tomography",
            "body_part": "Chest",
            "dataset_tag": "alignment",
        },
        {"id": 7, "image": "imgs/a.png", "conversations": [{"from": "human", "value": "Describe."}, {"from": "gpt", "value": "Normal."}]},
    ]
    return write_json(tmp_path / "llava.json", records)


def test_llava_import_field_by_field(llava_file, tmp_path):
    first, second = list(import_samples("llava", llava_file, relative_to=tmp_path, split="train"))
    assert first.id == "llava/pmc-1" and first.source == "llava" and first.task == "conversation" and first.split == "train"
    assert [i.path for i in first.images] == ["imgs/a.png", "imgs/b.png"]
    assert [t.role for t in first.turns] == ["user", "assistant", "user", "assistant"]
    assert user_parts(first) == [("image", 0), ("text", "\nCompare with "), ("image", 1), ("text", ".")]
    assert first.turns[3].text == "Left upper lobe."
    assert first.labels == {"modality": "CT", "body_part": "Chest"}
    assert first.meta == {"dataset_tag": "alignment"}
    assert first.images[0].modality is None  # the published prompt is kept as is
    # no <image> placeholder: the listed image opens the first user turn
    assert second.id == "llava/7" and user_parts(second) == [("image", 0), ("text", "Describe.")]


def test_llava_paths_are_absolute_without_relative_to(llava_file, tmp_path):
    sample = next(import_samples("llava", llava_file))
    assert sample.images[0].path == (tmp_path / "imgs" / "a.png").as_posix()


def test_llava_round_trip(llava_file, tmp_path):
    first = list(import_samples("llava", llava_file, relative_to=tmp_path))
    out = tmp_path / "out" / "llava.json"
    assert export_samples("llava", first, out, image_root=tmp_path, relative_to=tmp_path) == 2
    exported = json.loads(out.read_text())
    assert exported[0]["id"] == "pmc-1" and exported[0]["image"] == ["imgs/a.png", "imgs/b.png"]
    assert exported[0]["conversations"][0] == {"from": "human", "value": "<image>\nCompare with <image>."}
    assert exported[1]["image"] == "imgs/a.png" and exported[1]["conversations"][0]["value"] == "<image>Describe."
    again = list(import_samples("llava", out, image_root=tmp_path, relative_to=tmp_path))
    assert again == first
    # and through our own JSONL, byte for byte
    jsonl = tmp_path / "samples.jsonl"
    write_samples(jsonl, again)
    data = jsonl.read_bytes()
    write_samples(jsonl, read_samples(jsonl))
    assert jsonl.read_bytes() == data and list(read_samples(jsonl)) == first


def test_llava_export_default_image_root_is_the_output_folder(llava_file, tmp_path):
    samples = list(import_samples("llava", llava_file))  # absolute paths
    out = tmp_path / "export" / "train.json"
    export_samples("llava", samples, out)
    assert json.loads(out.read_text())[1]["image"] == "../imgs/a.png"
    assert list(import_samples("llava", out)) == samples


def test_llava_export_of_another_source_keeps_the_full_id(tmp_path):
    sample = Sample(
        id="vqa-rad/5",
        task="vqa",
        source="vqa-rad",
        turns=[Turn(role="user", content=[ImagePart(image=0), TextPart(text="Q?")]), text_turn("assistant", "A")],
        images=[ImageRef(path="/data/x.png")],
    )
    out = tmp_path / "l.json"
    export_samples("llava", [sample], out, image_root="/data")
    assert json.loads(out.read_text()) == [
        {"id": "vqa-rad/5", "image": "x.png", "conversations": [{"from": "human", "value": "<image>Q?"}, {"from": "gpt", "value": "A"}]}
    ]


def test_llava_malformed_records_name_the_record(tmp_path):
    bad = write_json(
        tmp_path / "bad.json",
        [
            {"id": "ok", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
            {"id": "x", "image": ["a.png"], "conversations": [{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "."}]},
        ],
    )
    with pytest.raises(MedMLLMError, match=r"bad.json: record 1: 2 <image> placeholder\(s\) for 1 image\(s\)"):
        list(import_samples("llava", bad))
    bad = write_json(tmp_path / "bad2.json", [{"id": "x", "conversations": [{"from": "robot", "value": "?"}]}])
    with pytest.raises(MedMLLMError, match=r"bad2.json: record 0: unknown role 'robot'"):
        list(import_samples("llava", bad))
    bad = write_json(tmp_path / "bad3.json", [{"id": "x", "conversations": [{"from": "human", "value": "only a question"}]}])
    with pytest.raises(MedMLLMError, match=r"bad3.json: record 0: .*no assistant turn"):
        list(import_samples("llava", bad))
    (tmp_path / "broken.json").write_text('[{"id": 1,\n "conversations": ]')
    with pytest.raises(MedMLLMError, match=r"broken.json:2: not valid JSON"):
        list(import_samples("llava", tmp_path / "broken.json"))


def test_missing_images_are_reported_not_dropped(llava_file, tmp_path):
    (tmp_path / "imgs" / "b.png").unlink()
    stream = import_samples("llava", llava_file, check_images=True)
    samples = list(stream)
    assert len(samples) == 2
    assert len(stream.missing) == 1 and stream.missing.samples == 1
    assert str(tmp_path / "imgs" / "b.png") in stream.missing.summary()
    assert "1 image file(s) missing, needed by 1 sample(s)" in stream.missing.summary()
    report = MissingImages()
    kept = list(import_samples("llava", llava_file, relative_to=tmp_path, missing=report, drop_missing=True))
    assert [s.id for s in kept] == ["llava/7"] and report.dropped == 1
    assert "1 sample(s) left out" in report.summary()


# -- ShareGPT --------------------------------------------------------------------------------------


def test_sharegpt_messages_and_conversations(tmp_path):
    png(tmp_path / "x" / "1.png")
    png(tmp_path / "x" / "2.png")
    data_url = "data:image/png;base64," + __import__("base64").b64encode(png_bytes(9)).decode()
    write_json(
        tmp_path / "chat.json",
        [
            {
                "messages": [
                    {"role": "system", "content": "You are a radiologist."},
                    {"role": "user", "content": "<image>What is shown?"},
                    {"role": "assistant", "content": "A fracture."},
                ],
                "images": ["x/1.png"],
                "topic": "bone",
            },
            {
                "id": "oa",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Compare "},
                            {"type": "image", "image": "x/2.png"},
                            {"type": "image_url", "image_url": {"url": data_url}},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": "Same."}]},
                ],
            },
        ],
    )
    first, second = list(import_samples("sharegpt", tmp_path / "chat.json", relative_to=tmp_path))
    assert first.id == "sharegpt/0" and [t.role for t in first.turns] == ["system", "user", "assistant"]
    assert user_parts(Sample(id="x", task="t", turns=first.turns[1:], images=first.images)) == [("image", 0), ("text", "What is shown?")]
    assert first.meta == {"topic": "bone"} and first.images[0].path == "x/1.png"
    assert second.id == "sharegpt/oa" and second.images[0].path == "x/2.png"
    assert second.images[1].path.startswith("images/sharegpt/") and (tmp_path / second.images[1].path).read_bytes() == png_bytes(9)
    assert [p.type for p in second.turns[0].content] == ["text", "image", "image"]

    conv = tmp_path / "conv.jsonl"
    conv.write_text(
        json.dumps(
            {
                "conversations": [{"from": "human", "value": "<image>Q"}, {"from": "gpt", "value": "A"}],
                "system": "Be brief.",
                "images": ["x/1.png"],
            }
        )
        + "\n"
    )
    (s,) = import_samples("sharegpt", conv, relative_to=tmp_path)
    assert [t.role for t in s.turns] == ["system", "user", "assistant"] and s.turns[0].text == "Be brief."


@pytest.mark.parametrize("style,suffix", [("messages", ".json"), ("conversations", ".jsonl")])
def test_sharegpt_round_trip(tmp_path, style, suffix):
    png(tmp_path / "x" / "1.png")
    src = write_json(
        tmp_path / "chat.json",
        [
            {
                "id": "a",
                "messages": [{"role": "user", "content": "Look <image> here"}, {"role": "assistant", "content": "Ok"}],
                "images": ["x/1.png"],
                "extra": 1,
            }
        ],
    )
    samples = list(import_samples("sharegpt", src, relative_to=tmp_path))
    out = tmp_path / f"out{suffix}"
    assert export_samples("sharegpt", samples, out, relative_to=tmp_path, style=style) == 1
    if suffix == ".jsonl":
        record = json.loads(out.read_text().splitlines()[0])
        assert record["conversations"][0] == {"from": "human", "value": "Look <image> here"}
    else:
        record = json.loads(out.read_text())[0]
        assert record == {
            "id": "a",
            "messages": [{"role": "user", "content": "Look <image> here"}, {"role": "assistant", "content": "Ok"}],
            "images": ["x/1.png"],
            "extra": 1,
        }
    assert list(import_samples("sharegpt", out, relative_to=tmp_path)) == samples


def test_sharegpt_malformed(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]}]})
        + "\n"
    )
    with pytest.raises(MedMLLMError, match=r"bad.jsonl:2: remote image 'https://x.org/a.png'"):
        list(import_samples("sharegpt", bad))
    bad.write_text(json.dumps({"messages": [], "videos": ["v.mp4"]}) + "\n")
    with pytest.raises(MedMLLMError, match=r"bad.jsonl:1: videos are not supported"):
        list(import_samples("sharegpt", bad))
    with pytest.raises(MedMLLMError, match="unknown sharegpt style 'x'"):
        export_samples("sharegpt", [], tmp_path / "o.json", style="x")


# -- VQA-RAD ---------------------------------------------------------------------------------------


@pytest.fixture
def vqa_rad_dir(tmp_path):
    root = tmp_path / "vqa-rad"
    png(root / "VQA_RAD Image Folder" / "synpic1.jpg")
    png(root / "VQA_RAD Image Folder" / "synpic2.jpg")
    records = [
        {
            "qid": 1,
            "image_name": "synpic1.jpg",
            "image_organ": "HEAD",
            "question": "Is there an infarct?",
            "answer": "Yes",
            "answer_type": "CLOSED",
            "question_type": "PRES",
            "phrase_type": "freeform",
            "image_case_url": "https://medpix/1",
            "evaluation": "given",
        },
        {
            "qid": 2,
            "image_name": "synpic2.jpg",
            "image_organ": "CHEST",
            "question": "How many ribs are fractured?",
            "answer": 2,
            "answer_type": "OPEN",
            "question_type": "COUNT",
            "phrase_type": "test_freeform",
        },
        {
            "qid": "3",
            "image_name": "synpic1.jpg",
            "image_organ": "HEAD",
            "question": "Where is the lesion? ",
            "answer": "left frontal lobe",
            "answer_type": "OPEN",
            "question_type": "POS",
            "phrase_type": "test_para",
            "question_rephrase": "Where is the abnormality?",
        },
    ]
    write_json(root / "VQA_RAD Dataset Public.json", records)
    return root


def test_vqa_rad_field_by_field(vqa_rad_dir, tmp_path):
    a, b, c = list(import_samples("vqa-rad", vqa_rad_dir, relative_to=tmp_path))
    assert (a.id, a.task, a.split, a.source) == ("vqa-rad/1", "vqa", "train", "vqa-rad")
    assert a.images == [ImageRef(path="vqa-rad/VQA_RAD Image Folder/synpic1.jpg")]
    assert user_parts(a) == [("image", 0), ("text", "Is there an infarct?")]
    assert a.turns[1].role == "assistant" and a.turns[1].text == "Yes"
    assert a.targets == {"answer": "Yes"}
    assert a.labels == {"answer_type": "closed", "question_type": "PRES", "organ": "HEAD"}
    assert a.meta == {"phrase_type": "freeform", "image_case_url": "https://medpix/1"}
    assert (b.split, b.targets["answer"], b.labels["answer_type"]) == ("test", "2", "open")
    assert c.split == "test" and c.turns[0].text == "Where is the lesion?" and c.meta["question_rephrase"] == "Where is the abnormality?"
    assert [s.id for s in import_samples("vqa-rad", vqa_rad_dir / "VQA_RAD Dataset Public.json", split="test")] == [
        "vqa-rad/2",
        "vqa-rad/3",
    ]


def test_vqa_rad_to_llava_and_back(vqa_rad_dir, tmp_path):
    samples = list(import_samples("vqa-rad", vqa_rad_dir, relative_to=tmp_path))
    out = tmp_path / "vqa-rad-llava.json"
    export_samples("llava", samples, out, image_root=vqa_rad_dir, relative_to=tmp_path)
    again = list(import_samples("llava", out, image_root=vqa_rad_dir, relative_to=tmp_path))
    for before, after in zip(samples, again):
        assert after.turns == before.turns and after.images == before.images and after.id == f"llava/{before.id}"


def test_vqa_rad_malformed_and_missing(vqa_rad_dir, tmp_path):
    path = vqa_rad_dir / "VQA_RAD Dataset Public.json"
    records = json.loads(path.read_text())
    del records[1]["question"]
    write_json(path, records)
    stream = import_samples("vqa-rad", vqa_rad_dir)
    assert next(stream).id == "vqa-rad/1"
    with pytest.raises(MedMLLMError, match=r"VQA_RAD Dataset Public.json: record 1: missing field 'question'"):
        next(stream)
    write_json(path, [{"qid": 9, "image_name": "gone.jpg", "question": "Q?", "answer": "A", "phrase_type": "freeform"}])
    stream = import_samples("vqa-rad", vqa_rad_dir, check_images=True)
    assert [s.id for s in stream] == ["vqa-rad/9"]
    assert list(stream.missing.files) == [str(vqa_rad_dir / "VQA_RAD Image Folder" / "gone.jpg")]
    write_json(path, {"not": "a list"})
    with pytest.raises(MedMLLMError, match="expected a JSON list of records, got dict"):
        list(import_samples("vqa-rad", path))


# -- SLAKE -----------------------------------------------------------------------------------------


@pytest.fixture
def slake_dir(tmp_path):
    root = tmp_path / "Slake1.0"
    png(root / "imgs" / "xmlab1" / "source.jpg")
    png(root / "imgs" / "xmlab2" / "source.jpg")

    def rec(qid, img, q, a, lang="en", content="Position", modality="MRI", atype="OPEN"):
        return {
            "img_id": int(img[5:]),
            "img_name": f"{img}/source.jpg",
            "question": q,
            "answer": a,
            "q_lang": lang,
            "location": "Lung",
            "modality": modality,
            "answer_type": atype,
            "base_type": "vqa",
            "content_type": content,
            "triple": ["vhead", "_", "_"],
            "qid": qid,
        }

    write_json(
        root / "train.json", [rec(0, "xmlab1", "Where is the lesion?", "Left Lung"), rec(1, "xmlab1", "病灶在哪里？", "左肺", lang="zh")]
    )
    write_json(
        root / "validate.json", [rec(10, "xmlab2", "What modality is used to take this image?", "CT", content="Modality", modality="CT")]
    )
    write_json(
        root / "test.json", [rec(20, "xmlab2", "Is the lung healthy?", "No", atype="CLOSED", modality="X-Ray", content="Abnormality")]
    )
    return root


def test_slake_field_by_field(slake_dir, tmp_path):
    samples = list(import_samples("slake", slake_dir, relative_to=tmp_path))
    assert [(s.id, s.split) for s in samples] == [("slake/0", "train"), ("slake/10", "val"), ("slake/20", "test")]
    first, modality_q, closed = samples
    assert first.images == [ImageRef(path="Slake1.0/imgs/xmlab1/source.jpg", modality="MRI")]
    assert first.labels == {"answer_type": "open", "modality": "MRI", "location": "Lung", "content_type": "Position", "lang": "en"}
    assert first.targets == {"answer": "Left Lung"} and first.meta == {"img_id": 1, "base_type": "vqa", "triple": ["vhead", "_", "_"]}
    # a question about the modality must not find the answer in the prompt's modality header
    assert modality_q.images[0].modality is None and modality_q.labels["modality"] == "CT"
    assert closed.images[0].modality == "X-ray" and closed.labels["answer_type"] == "closed"


def test_slake_language_option(slake_dir):
    zh = list(import_samples("slake", slake_dir / "train.json", lang="zh"))
    assert [(s.id, s.turns[1].text, s.labels["lang"]) for s in zh] == [("slake/1", "左肺", "zh")]
    assert len(list(import_samples("slake", slake_dir, lang="all"))) == 4
    with pytest.raises(MedMLLMError, match="unknown SLAKE language 'fr'"):
        list(import_samples("slake", slake_dir, lang="fr"))


def test_slake_folder_without_split_files(tmp_path):
    with pytest.raises(MedMLLMError, match="none of train.json, validate.json, test.json found"):
        list(import_samples("slake", tmp_path))


# -- PMC-VQA ---------------------------------------------------------------------------------------


PMC_HEADER = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]


def test_pmc_vqa_choice_and_open(tmp_path):
    root = tmp_path / "pmc"
    png(root / "figures" / "PMC1_fig1.jpg")
    write_csv(
        root / "train.csv",
        PMC_HEADER,
        [
            [
                "PMC1_fig1.jpg",
                "What imaging was used?",
                "Computed tomography",
                " A:MRI ",
                " B:Computed tomography ",
                " C:PET ",
                " D:Ultrasound ",
                "B",
            ]
        ],
    )
    write_csv(
        root / "test_2.csv",
        ["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D", "Answer", "split"],
        [["17", "PMC1_fig1.jpg", "CT of the chest.", "Which side?", "A:Left", "B:Right", "C:Both", "D:Neither", "C:Both", "test"]],
    )
    (s,) = import_samples("pmc-vqa", root, relative_to=tmp_path)
    assert (s.id, s.split, s.task, s.source) == ("pmc-vqa/train-0", "train", "vqa", "pmc-vqa")
    assert s.turns[0].text == "What imaging was used?\nA: MRI\nB: Computed tomography\nC: PET\nD: Ultrasound"
    assert s.turns[1].text == "B: Computed tomography"
    assert s.targets == {"answer": "Computed tomography", "choice": "B"} and s.labels == {"answer_type": "choice"}
    assert s.images == [ImageRef(path="pmc/figures/PMC1_fig1.jpg")]
    (t,) = import_samples("pmc-vqa", root / "test_2.csv", relative_to=tmp_path, mode="open")
    assert (t.id, t.split, t.turns[0].text, t.turns[1].text) == ("pmc-vqa/test_2-17", "test", "Which side?", "C:Both")
    assert t.targets == {"answer": "C:Both", "choice": "C"} and t.meta == {"caption": "CT of the chest."}


def test_pmc_vqa_malformed_rows_name_the_line(tmp_path):
    path = write_csv(
        tmp_path / "train.csv",
        PMC_HEADER,
        [["a.jpg", "Q1", "x", "A:x", "B:y", "C:z", "D:w", "A"], ["b.jpg", "Q2", "", "A:x", "B:y", "C:z", "D:w", "A"]],
    )
    with pytest.raises(MedMLLMError, match=r"train.csv:3: missing field 'Answer'"):
        list(import_samples("pmc-vqa", path))
    path.write_text(",".join(PMC_HEADER) + "\na.jpg,Q,x,A:x,B:y,C:z,D:w,A,extra\n")
    with pytest.raises(MedMLLMError, match=r"train.csv:2: 9 field\(s\) where the header has 8"):
        list(import_samples("pmc-vqa", path))
    path.write_text("Figure_path,Question\na.jpg,Q\n")
    with pytest.raises(MedMLLMError, match=r"train.csv:1: missing column\(s\) 'Answer'"):
        list(import_samples("pmc-vqa", path))
    path.write_text(",".join(PMC_HEADER) + "\na.jpg,Q,nothing,A:x,B:y,C:z,D:w,\n")
    with pytest.raises(MedMLLMError, match=r"train.csv:2: answer 'nothing' is none of the choices"):
        list(import_samples("pmc-vqa", path))


# -- R2Gen (IU X-ray, MIMIC-CXR) -------------------------------------------------------------------


@pytest.fixture
def iu_xray(tmp_path):
    root = tmp_path / "iu_xray"
    for view in ("0", "1"):
        png(root / "images" / "CXR1_1_IM-0001" / f"{view}.png")
    png(root / "images" / "CXR2_IM-0652" / "0.png")
    annotation = {
        "train": [
            {
                "id": "CXR1_1_IM-0001",
                "report": "The heart is normal in size. The lungs are clear.",
                "image_path": ["CXR1_1_IM-0001/0.png", "CXR1_1_IM-0001/1.png"],
                "split": "train",
            }
        ],
        "val": [],
        "test": [{"id": "CXR2_IM-0652", "report": "No pneumothorax.", "image_path": ["CXR2_IM-0652/0.png"], "split": "test"}],
    }
    write_json(root / "annotation.json", annotation)
    return root


def test_r2gen_iu_xray_p2med(iu_xray, tmp_path):
    train, test = list(import_samples("r2gen", iu_xray, relative_to=iu_xray))
    assert (train.id, train.task, train.split, train.source) == ("iu-xray/CXR1_1_IM-0001", "report", "train", "iu-xray")
    assert train.images == [
        ImageRef(path="images/CXR1_1_IM-0001/0.png", modality="X-ray", exam="CXR1_1_IM-0001"),
        ImageRef(path="images/CXR1_1_IM-0001/1.png", exam="CXR1_1_IM-0001"),  # one exam header per study
    ]
    kinds = [p.type for p in train.turns[0].content]
    assert kinds == ["text", "image", "image", "text"]
    assert train.turns[0].content[0].text == "Current radiological data is as follows: \n "
    assert train.turns[0].content[-1].text.endswith("generate a report in the format: \n [Findings] {Your findings based on the images} \n")
    assert train.turns[1].text == "[Findings] The heart is normal in size. The lungs are clear."
    assert train.targets == {"findings": "The heart is normal in size. The lungs are clear."}
    assert train.labels == {"modality": "X-ray"} and train.patient_id is None
    assert test.split == "test" and len(test.images) == 1
    assert [s.id for s in import_samples("r2gen", iu_xray / "annotation.json", split="test")] == ["iu-xray/CXR2_IM-0652"]


def test_r2gen_mimic_plain(tmp_path):
    root = tmp_path / "mimic_cxr"
    rel = "p10/p10000032/s50414267/02aa804e.jpg"
    png(root / "images" / rel)
    write_json(
        root / "annotation.json",
        {
            "train": [
                {
                    "id": "02aa804e",
                    "study_id": 50414267,
                    "subject_id": 10000032,
                    "report": "Lungs are clear.",
                    "image_path": [rel],
                    "split": "train",
                }
            ],
            "val": [],
            "test": [],
        },
    )
    (s,) = import_samples("r2gen", root, report_style="plain", relative_to=root)
    assert (s.id, s.source, s.patient_id, s.visit_id) == ("mimic-cxr/02aa804e", "mimic-cxr", "10000032", "50414267")
    assert s.images[0].exam == "50414267" and s.turns[1].text == "Lungs are clear."
    assert [p.type for p in s.turns[0].content] == ["image", "text"]


def test_r2gen_malformed(iu_xray):
    path = iu_xray / "annotation.json"
    doc = json.loads(path.read_text())
    doc["test"][0]["image_path"] = []
    write_json(path, doc)
    with pytest.raises(MedMLLMError, match=r"annotation.json: test record 0: 'image_path' must be a non-empty list"):
        list(import_samples("r2gen", path))
    write_json(path, {"extra": []})
    with pytest.raises(MedMLLMError, match="unknown section 'extra'"):
        list(import_samples("r2gen", path))
    with pytest.raises(MedMLLMError, match="unknown report style 'fancy'"):
        list(import_samples("r2gen", path, report_style="fancy"))


# -- RadFM CSVs ------------------------------------------------------------------------------------


def test_radfm_vqa_csv_with_prefix_rewrite(tmp_path):
    png(tmp_path / "data" / "vqarad" / "synpic1.jpg")
    path = write_csv(
        tmp_path / "csv" / "vqarad_train.csv",
        ["", "PMC_ID", "img_root_dir", "Figure_path", "Question", "Answer"],
        [["0", "", "/gpfs/home/cs/data/vqarad", "synpic1.jpg", "Is this a CT?", "yes"]],
    )
    (s,) = import_samples(
        "radfm-csv", path, strip_prefix="/gpfs/home/cs/data", image_root=tmp_path / "data", relative_to=tmp_path, check_images=True
    )
    assert (s.id, s.task, s.split, s.source, s.meta) == ("radfm/vqarad_train-0", "vqa", "train", "radfm", {"dataset": "vqarad"})
    assert s.images == [ImageRef(path="data/vqarad/synpic1.jpg")] and s.targets == {"answer": "yes"}


def test_radfm_caption_and_diagnosis(tmp_path):
    path = write_csv(
        tmp_path / "mimic_caption_test.csv",
        ["image_path", "label"],
        [
            ["/x/a.jpg", "Findings: The lungs are clear. Impression: No acute process."],
            ["/x/b.jpg", "Impression: Stable cardiomegaly."],
            ["/x/c.jpg", "pneumonia"],
        ],
    )
    report, impression_only, diagnosis = list(import_samples("radfm-csv", path))
    assert report.task == "report" and report.split == "test"
    assert report.targets == {"findings": "The lungs are clear.", "impression": "No acute process."}
    assert report.turns[1].text == "[Findings] The lungs are clear. \n [Impression] No acute process."
    assert parse_report(report.turns[1].text) == report.targets
    assert "[Impression] {Your impression based on the images}" in report.turns[0].content[-1].text
    assert impression_only.targets == {"impression": "Stable cardiomegaly."}
    assert (diagnosis.task, diagnosis.targets, diagnosis.turns[1].text) == ("diagnosis", {"diagnosis": "pneumonia"}, "pneumonia")
    (plain, *_) = import_samples("radfm-csv", path, report_style="plain")
    assert plain.turns[1].text == "The lungs are clear.\nNo acute process."
    forced = list(import_samples("radfm-csv", path, layout="caption"))
    assert forced[2].task == "report" and forced[2].targets == {"findings": "pneumonia"}
    empty = write_csv(
        tmp_path / "mimic_caption_train.csv", ["image_path", "label"], [["/x/a.jpg", "Findings: x"], ["/x/d.jpg", "Findings:  "]]
    )
    with pytest.raises(MedMLLMError, match=r"mimic_caption_train.csv:3: the report is empty"):
        list(import_samples("radfm-csv", empty))


def test_radfm_binary_modality_radiovqa_medpix(tmp_path):
    binary = write_csv(
        tmp_path / "chestxray_balance_train_new.csv",
        ["image_path", "disease", "label"],
        [["a.png", "pneumothorax", "1"], ["b.png", "effusion", "0"]],
    )
    yes, no = list(import_samples("radfm-csv", binary, relative_to=tmp_path))
    assert yes.turns[0].text == "Does this image show pneumothorax?" and yes.turns[1].text == "yes"
    assert yes.labels == {"answer_type": "closed", "disease": "pneumothorax", "present": True} and yes.task == "diagnosis"
    assert no.targets == {"answer": "no"} and no.labels["present"] is False
    modality = write_csv(tmp_path / "radio_modality_train.csv", ["image_path", "answer"], [["ct/1.nii.gz", "MRI"]])
    (m,) = import_samples("radfm-csv", modality, relative_to=tmp_path)
    assert (m.task, m.targets, m.labels, m.images[0].modality) == ("modality", {"modality": "MRI"}, {"modality": "MRI"}, None)
    radiovqa = write_csv(
        tmp_path / "radiology_vqa_test.csv",
        ["image_path", "image_caption", "question", "answer"],
        [["case/1.npy", "cap", "Where?", "Liver"]],
    )
    (r,) = import_samples("radfm-csv", radiovqa, relative_to=tmp_path)
    assert (r.task, r.images[0].path, r.turns[1].text) == ("vqa", "case/1.npy", "Liver")
    medpix = write_csv(
        tmp_path / "MedPix_questions_train.csv",
        ["name", "question", "answer", "explanation"],
        [["MPX1.png", "What is it?", "Glioma", "Ring enhancement"]],
    )
    (q,) = import_samples("radfm-csv", medpix, relative_to=tmp_path, source="medpix")
    assert (q.id, q.turns[1].text, q.targets) == (
        "medpix/MedPix_questions_train-0",
        "Glioma. Ring enhancement",
        {"answer": "Glioma", "explanation": "Ring enhancement"},
    )
    bad = write_csv(tmp_path / "x_train.csv", ["image_path", "disease", "label"], [["a.png", "x", "maybe"]])
    with pytest.raises(MedMLLMError, match=r"x_train.csv:2: label must be 0 or 1, got 'maybe'"):
        list(import_samples("radfm-csv", bad))
    unknown = write_csv(tmp_path / "other.csv", ["foo", "bar"], [["1", "2"]])
    with pytest.raises(MedMLLMError, match=r"other.csv:1: not a RadFM CSV layout I know \(header: foo, bar\)"):
        list(import_samples("radfm-csv", unknown))


# -- PathVQA (Hugging Face parquet) ----------------------------------------------------------------


@pytest.fixture
def pathvqa_dir(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "path-vqa" / "data"
    root.mkdir(parents=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image_type), ("question", pa.string()), ("answer", pa.string())])

    def table(rows):
        return pa.Table.from_pylist(rows, schema=schema)

    same = {"bytes": png_bytes(1), "path": "train_0001.jpg"}
    pq.write_table(
        table(
            [
                {"image": same, "question": "Is this necrosis?", "answer": "yes"},
                {"image": same, "question": "What organ?", "answer": "liver"},
            ]
        ),
        root / "train-00000-of-00002.parquet",
    )
    pq.write_table(
        table([{"image": {"bytes": png_bytes(2), "path": None}, "question": "Any mitoses?", "answer": "no"}]),
        root / "train-00001-of-00002.parquet",
    )
    pq.write_table(
        table([{"image": {"bytes": png_bytes(3), "path": None}, "question": "Stain?", "answer": "H&E"}]),
        root / "validation-00000-of-00001.parquet",
    )
    return root.parent


def test_pathvqa_parquet(pathvqa_dir, tmp_path):
    out = tmp_path / "out"
    stream = import_samples("pathvqa", pathvqa_dir, relative_to=out, check_images=True)
    samples = list(stream)
    assert not stream.missing
    assert [(s.id, s.split) for s in samples] == [
        ("path-vqa/train-0", "train"),
        ("path-vqa/train-1", "train"),
        ("path-vqa/train-2", "train"),
        ("path-vqa/val-0", "val"),
    ]
    first = samples[0]
    assert first.task == "vqa" and first.targets == {"answer": "yes"} and first.labels == {"answer_type": "closed", "modality": "pathology"}
    assert samples[1].labels["answer_type"] == "open"
    assert (
        first.images[0].path.startswith("images/path-vqa/")
        and first.images[0].path.endswith(".png")
        and first.images[0].modality == "pathology"
    )
    assert samples[1].images == first.images  # one file per distinct image
    assert len(list((out / "images" / "path-vqa").iterdir())) == 3
    assert (out / first.images[0].path).read_bytes() == png_bytes(1)
    assert [s.id for s in import_samples("pathvqa", pathvqa_dir, image_dir=tmp_path / "img", split="val")] == ["path-vqa/val-0"]


def test_pathvqa_needs_an_image_folder(pathvqa_dir):
    with pytest.raises(MedMLLMError, match="the images are embedded in the data; pass image_dir=FOLDER"):
        list(import_samples("pathvqa", pathvqa_dir))


def test_pathvqa_bad_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist([{"image": {"bytes": png_bytes(), "path": None}, "question": "Q", "answer": None}]), path)
    with pytest.raises(MedMLLMError, match=r"test-00000-of-00001.parquet: row 0: missing field 'answer'"):
        list(import_samples("pathvqa", path, image_dir=tmp_path / "img"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(MedMLLMError, match="junk.parquet: not a readable parquet file"):
        list(import_samples("pathvqa", tmp_path / "junk.parquet", image_dir=tmp_path / "img"))


# -- Hugging Face datasets cache -------------------------------------------------------------------


def test_hf_without_datasets_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MedMLLMError, match=r"needs the `datasets` package: pip install datasets"):
        list(import_samples("hf", "flaviagiammarino/vqa-rad", image_dir=tmp_path))


def _make_cached_dataset(cache: Path) -> None:
    """A dataset as `datasets` caches it after one online load_dataset('acme/tiny-vqa')."""
    import shutil

    import datasets

    feats = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")})
    folder = cache / "acme___tiny-vqa" / "default" / "0.0.0" / "0123abcd"
    folder.mkdir(parents=True)
    splits = {}
    for split, rows in {"train": [("Is there a mass?", "yes", 1), ("Where?", "liver", 1)], "test": [("Normal?", "no", 2)]}.items():
        ds = datasets.Dataset.from_dict(
            {
                "image": [{"bytes": png_bytes(v), "path": None} for *_, v in rows],
                "question": [q for q, *_ in rows],
                "answer": [a for _, a, _ in rows],
            },
            features=feats,
        )
        saved = cache.parent / f"saved-{split}"
        ds.save_to_disk(str(saved))
        shutil.copy(next(saved.glob("*.arrow")), folder / f"tiny-vqa-{split}.arrow")
        splits[split] = {"name": split, "num_examples": len(rows), "dataset_name": "tiny-vqa"}
    info = datasets.DatasetInfo(
        features=feats, config_name="default", dataset_name="tiny-vqa", splits=datasets.SplitDict.from_split_dict(splits)
    )
    info.write_to_directory(str(folder))


def test_hf_dataset_id_from_the_offline_cache(tmp_path):
    pytest.importorskip("datasets")
    cache = tmp_path / "hf-cache"
    _make_cached_dataset(cache)
    out = tmp_path / "out"
    # A fresh interpreter: `datasets` reads HF_DATASETS_OFFLINE / HF_DATASETS_CACHE when imported.
    script = textwrap.dedent(
        f"""
        from medmllm.data.formats import import_samples
        for s in import_samples("hf", "acme/tiny-vqa", relative_to={str(out)!r}, check_images=True):
            print(s.to_json())
        """
    )
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(cache),
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    samples = [Sample.from_json(line) for line in done.stdout.splitlines()]
    assert [(s.id, s.split, s.source, s.turns[1].text) for s in samples] == [
        ("tiny-vqa/train-0", "train", "tiny-vqa", "yes"),
        ("tiny-vqa/train-1", "train", "tiny-vqa", "liver"),
        ("tiny-vqa/test-0", "test", "tiny-vqa", "no"),
    ]
    assert samples[0].images == samples[1].images and (out / samples[0].images[0].path).read_bytes() == png_bytes(1)
    assert samples[0].labels == {"answer_type": "closed"} and samples[1].labels == {"answer_type": "open"}


def test_hf_save_to_disk_folder_and_errors(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"image": [{"bytes": png_bytes(5), "path": None}], "question": ["Q?"], "answer": ["A"], "qid": [42], "organ": ["head"]},
                features=datasets.Features(
                    {
                        "image": datasets.Image(),
                        "question": datasets.Value("string"),
                        "answer": datasets.Value("string"),
                        "qid": datasets.Value("int64"),
                        "organ": datasets.Value("string"),
                    }
                ),
            ),
        }
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    (s,) = import_samples("hf", tmp_path / "saved", image_dir=tmp_path / "img", source="vqa-rad", modality="CT")
    assert (s.id, s.split, s.meta, s.labels) == ("vqa-rad/42", "train", {"organ": "head"}, {"answer_type": "open", "modality": "CT"})
    assert s.images[0].modality == "CT" and Path(s.images[0].path).parent == (tmp_path / "img")
    with pytest.raises(MedMLLMError, match=r"no split 'test' \(has: train\)"):
        list(import_samples("hf", tmp_path / "saved", image_dir=tmp_path / "img", split="test"))


# -- our own JSONL ---------------------------------------------------------------------------------


def test_medmllm_jsonl_rebases_paths_and_round_trips_bytes(vqa_rad_dir, tmp_path):
    samples = list(import_samples("vqa-rad", vqa_rad_dir, relative_to=tmp_path))
    first = tmp_path / "a.jsonl"
    write_samples(first, samples)
    same = list(import_samples("medmllm", first, relative_to=tmp_path))
    assert same == samples
    copy = tmp_path / "b.jsonl"
    export_samples("medmllm", same, copy, relative_to=tmp_path)
    assert copy.read_bytes() == first.read_bytes()
    elsewhere = tmp_path / "sub" / "c.jsonl"
    export_samples("medmllm", same, elsewhere, relative_to=tmp_path)
    moved = list(read_samples(elsewhere))
    assert moved[0].images[0].path == "../vqa-rad/VQA_RAD Image Folder/synpic1.jpg"
    assert list(import_samples("medmllm", elsewhere, relative_to=tmp_path)) == samples
