"""The demo pipeline (`medmllm.demo`) end to end on the tiny preset: MiniRad -> three stage
datasets -> three training stages + the blind model -> evaluation of trained / untrained / blind
with CIs -> summary. The real demo (SmolLM2, minutes) is `make demo`; this proves the wiring."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path

import pytest

from medmllm.data.conversations import split_conversation
from medmllm.data.io import read_samples
from medmllm.data.schema import ImagePart
from medmllm.demo import (
    DEMO_TASKS,
    REPORT_TASKS,
    DemoConfig,
    change_f1,
    change_terms,
    exam_reports,
    first_exams,
    follow_ups,
    more_questions,
    overlap,
    paired_differences,
    run_demo,
    shuffled_label_f1,
    stage_datasets,
    strip_images,
    with_report_round,
)

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def minirad(tmp_path_factory) -> Path:
    from medmllm.synth.minirad import MiniRadConfig, generate

    out = tmp_path_factory.mktemp("minirad")
    generate(out, MiniRadConfig(n=300, seed=3, xray_size=(32, 32), ct_shape=(8, 32, 32), modalities={"X-ray": 0.6, "CT": 0.4}))
    return out


def test_blind_samples_keep_the_text_and_lose_every_image(minirad):
    sample = next(s for s in read_samples(minirad / "train.jsonl") if s.images)
    blind = strip_images(sample)
    assert blind.images == [] and not any(isinstance(p, ImagePart) for t in blind.turns for p in t.content)
    assert [t.text for t in blind.turns] == [t.text for t in sample.turns]


def test_stage_datasets_follow_p2med(minirad, tmp_path):
    train = list(read_samples(minirad / "train.jsonl"))
    paths = stage_datasets(train, tmp_path / "seeing", seed=0, source=minirad)
    first = next(s for s in read_samples(paths["knowledge"]) if s.images)
    assert (tmp_path / "seeing" / first.images[0].path).resolve() == (minirad / next(
        s for s in train if s.id == first.id).images[0].path).resolve()  # image paths follow the moved file
    blind = stage_datasets(train, tmp_path / "blind", seed=0, blind=True)
    knowledge = list(read_samples(paths["knowledge"]))
    assert knowledge and all(s.task.startswith("p2med/report") for s in knowledge)  # stage 1: image-report pairs
    from medmllm.demo.benchmark import answers_no
    from medmllm.demo.pipeline import task_family, text_length

    before = Counter(task_family(s) for s in train)
    task_balanced = list(read_samples(paths["task-balanced"]))
    after = Counter(task_family(s) for s in task_balanced)
    assert set(after) == set(before) and "reports" in after  # every family is represented; both report tasks are one
    # yes/no questions: as many "no" as "yes" (MiniRad asks two "no" in three)
    questions = stage_datasets(train, tmp_path / "questions", seed=0, source=minirad, tasks=("radbench/diagnosis-judgement",))
    asked = Counter(answers_no(s) for s in train if s.task == "radbench/diagnosis-judgement")
    answers = Counter(answers_no(s) for s in read_samples(questions["task-balanced"]))
    assert asked[True] > asked[False] and answers[True] == answers[False] == asked[False]
    # families balanced by text: the one with the least keeps all, the others about as much text
    text = {family: sum(text_length(s) for s in task_balanced if task_family(s) == family) for family in after}
    least = min(text, key=text.get)
    longest_sample = max(text_length(s) for s in task_balanced)
    assert all(abs(text[family] - text[least]) <= 2 * longest_sample for family in text), text
    chosen = stage_datasets(train, tmp_path / "chosen", seed=0, source=minirad, tasks=REPORT_TASKS)
    assert {s.task for s in read_samples(chosen["task-balanced"])} <= set(REPORT_TASKS)
    for name, path in blind.items():
        assert [s.id for s in read_samples(path)] == [s.id for s in read_samples(paths[name])]
        assert all(not s.images for s in read_samples(path))


def test_token_balanced_counts_keep_the_least_family_whole_and_give_the_others_its_tokens_times_their_share():
    from medmllm.demo.pipeline import token_balanced_counts

    samples = [("questions", 10)] * 10 + [("reports", 100)] * 8  # 100 and 800 tokens
    family, length = (lambda s: s[0]), (lambda s: s[1])
    assert token_balanced_counts(samples, family, length) == {"questions": 10, "reports": 1}
    assert token_balanced_counts(samples, family, length, {"reports": 3}) == {"questions": 10, "reports": 3}
    # a share below 1 on the smallest family: the others are cut to twice its tokens
    assert token_balanced_counts(samples, family, length, {"questions": 0.5}) == {"questions": 10, "reports": 2}


def test_scaled_counts_keep_the_proportions_and_the_total_and_never_scale_up():
    from medmllm.demo.pipeline import scaled_counts

    assert scaled_counts({"questions": 600, "reports": 79}, 480) == {"questions": 424, "reports": 56}
    assert sum(scaled_counts({"a": 5, "b": 7, "c": 11}, 10).values()) == 10
    assert scaled_counts({"questions": 300, "reports": 1}, 30) == {"questions": 29, "reports": 1}  # every family keeps one
    assert scaled_counts({"questions": 10, "reports": 2}, 100) == {"questions": 10, "reports": 2}


def test_stage_datasets_hold_what_the_recipes_steps_take(minirad, tmp_path):
    """One epoch of each LLM stage is its max_steps: the balanced mix is what trains (sizes from `stage_sizes`)."""
    from medmllm.demo.benchmark import DIAGNOSIS_TASKS, answers_no
    from medmllm.demo.pipeline import stage_sizes, task_family, text_length
    from medmllm.train import load_recipe

    sizes = stage_sizes(load_recipe(REPO / "recipes" / "demo.yaml"))
    assert sizes["task-balanced"] == 45 * 8 and sizes["disease-balanced"] == 30 * 4  # steps x batch size
    train = list(read_samples(minirad / "train.jsonl"))
    full = stage_datasets(train, tmp_path / "full", seed=0, source=minirad, tasks=DEMO_TASKS, report_share=(0.5, 2.0))
    sizes = {stage: len(list(read_samples(full[stage]))) * 2 // 3 for stage in ("task-balanced", "disease-balanced")}
    cut = stage_datasets(train, tmp_path / "cut", seed=0, source=minirad, tasks=DEMO_TASKS, report_share=(0.5, 2.0), sizes=sizes)
    for stage, size in sizes.items():
        whole, kept = (list(read_samples(paths[stage])) for paths in (full, cut))
        assert len(whole) > size and len(kept) == size
        share = lambda samples: sum(text_length(s) for s in samples if task_family(s) == "reports") / sum(map(text_length, samples))  # noqa: E731
        assert share(kept) == pytest.approx(share(whole), abs=0.12)  # the same mix, fewer samples
        assert Counter(s.id for s in kept).most_common(1)[0][1] == 1  # drawn without repeats
    assert len(list(read_samples(cut["knowledge"]))) == len(list(read_samples(full["knowledge"])))  # not sized: the warm-up reads it all
    # a part of the yes/no questions drawn, in any seed still half "no" (a draw of the whole family drifted)
    for seed in range(8):
        drawn = stage_datasets(train, tmp_path / f"seed{seed}", seed=seed, source=minirad, tasks=DEMO_TASKS, report_share=(0.5, 2.0), sizes=sizes)
        for stage in sizes:
            answers = Counter(answers_no(s) for s in read_samples(drawn[stage]) if s.task in DIAGNOSIS_TASKS)
            assert abs(answers[True] - answers[False]) <= 1 and answers[True] > 3, (seed, stage, answers)


def test_yes_no_balanced_asks_as_many_no_as_yes_of_each_kind_in_their_order(minirad):
    from medmllm.demo.benchmark import answers_no, question_kind, yes_no_balanced

    questions = [s for s in read_samples(minirad / "samples.jsonl") if s.task == "radbench/diagnosis-judgement"]
    assert 0 < sum(not answers_no(s) for s in questions) < len(questions) / 2  # MiniRad asks more "no"
    asked = Counter((question_kind(s), answers_no(s)) for s in questions)
    kinds = {kind for kind, _ in asked}
    assert len(kinds) > 3 and all(all(kind) and "{disease}" in kind[2] for kind in kinds)  # (modality, finding, wording) from MiniRad's labels
    assert len({kind[2] for kind in kinds}) > 1 and len({kind[:2] for kind in kinds}) < len(kinds)  # several wordings of a finding
    kept = yes_no_balanced(questions)
    got = Counter((question_kind(s), answers_no(s)) for s in kept)
    for kind in kinds:  # per kind, as many of each answer as the rarer one has
        assert got[kind, True] == got[kind, False] == min(asked[kind, True], asked[kind, False])
    order = [s.id for s in questions]
    assert [s.id for s in kept] == sorted((s.id for s in kept), key=order.index)
    # any answer rule that reads only the question text scores 0.5, one that learnt each wording's answer too
    from medmllm.eval.tasks.base import question_text

    for rule in (lambda s: "no", lambda s: "yes" if zlib.crc32(question_text(s).encode()) % 2 else "no",
                 lambda s: "yes" if zlib.crc32(question_kind(s)[2].encode()) % 3 else "no"):
        assert sum((rule(s) == "no") == answers_no(s) for s in kept) == len(kept) / 2
    few = yes_no_balanced(questions, limit=10)
    assert len(few) == 10 and sum(map(answers_no, few)) == 5 and len({question_kind(s) for s in few}) == 5  # kinds in turn
    assert yes_no_balanced(questions, seed=1) != kept  # which "no" questions: drawn by the seed
    overall = yes_no_balanced(questions, kind_of=lambda s: ())
    assert len(overall) == 2 * sum(not answers_no(s) for s in questions) > len(kept)


def test_no_mrc_stage_datasets_hold_one_exam_per_report_sample(minirad, tmp_path):
    train = list(read_samples(minirad / "train.jsonl"))
    conversations = [s for s in train if s.task in REPORT_TASKS and len(split_conversation(s)) > 1]
    assert conversations  # MiniRad's visits have 2-3 exams
    paths = stage_datasets(train, tmp_path / "single", seed=0, source=minirad, mrc=False)
    knowledge = list(read_samples(paths["knowledge"]))
    assert all(len(s.images) == 1 and sum(t.role == "assistant" for t in s.turns) == 1 for s in knowledge)
    exams = {s.id for s in knowledge}
    assert all(r.id in exams for s in conversations for r in split_conversation(s))  # every exam of every visit, alone


def test_single_exam_stages_split_the_reports_of_those_stages_only(minirad, tmp_path):
    train = [s for s in read_samples(minirad / "train.jsonl") if s.task in DEMO_TASKS]
    # stage 3 weighted to reports (at the demo's share this small MiniRad gives stage 3 two reports)
    paths = stage_datasets(train, tmp_path, seed=0, source=minirad, single_exam_stages=("disease-balanced",), report_share=(1.0, 20.0))

    def exams_per_report(stage):
        return Counter(len(s.images) for s in read_samples(paths[stage]) if s.task in REPORT_TASKS)

    assert set(exams_per_report("disease-balanced")) == {1}  # stage 3: one exam per report sample
    assert max(exams_per_report("task-balanced")) > 1 and max(exams_per_report("knowledge")) > 1  # the others: the visits
    exams = [s.images[0].exam for s in read_samples(paths["disease-balanced"]) if s.task in REPORT_TASKS]
    assert any(not exam.endswith("-e1") for exam in exams)  # a visit's later exams too, each alone
    with pytest.raises(ValueError, match="stage-2"):  # a typo is an error, not the recipe before
        stage_datasets(train, tmp_path / "typo", seed=0, source=minirad, single_exam_stages=("stage-2",))


def test_more_questions_ask_about_the_same_image_as_many_yes_as_no_and_answer_from_the_labels(minirad, tmp_path):
    import random
    import re

    from medmllm.synth.findings import CHEST_TYPES, FINDING_TYPES

    train = list(read_samples(minirad / "train.jsonl"))
    questions = [s for s in train if s.task == "radbench/diagnosis-judgement"]
    rng = random.Random(0)
    grown = [(s, more_questions(s, 4, rng)) for s in questions]
    chest = [FINDING_TYPES[t].disease for t in CHEST_TYPES]
    asked_more = 0
    for before, after in grown:
        assert after.turns[:len(before.turns)] == before.turns and after.images == before.images  # the question first, one image
        extra = after.turns[len(before.turns):]
        assert not any(isinstance(p, ImagePart) for t in extra for p in t.content) and [t.role for t in extra] == ["user", "assistant"] * (len(extra) // 2)
        answers = [t.text for t in extra[1::2]]
        assert answers.count("yes") == answers.count("no") <= 2  # as many yes as no, at most 4 rounds
        had = set(before.labels["diseases"])
        for question, answer in zip(extra[0::2], answers, strict=True):
            disease = next(d for d in chest if re.search(rf"\b{re.escape(d)}\b", question.text))
            assert disease != before.labels["asked"] and (answer == "yes") == (disease in had)  # the truth, never the first question again
        asked_more += bool(extra)
        assert bool(extra) == bool(had - {before.labels["asked"]})  # no other finding to pair a "no" with: left as it is
    assert asked_more > len(questions) // 10  # MiniRad exams with two findings get them
    report = next(s for s in train if s.task in REPORT_TASKS)
    assert more_questions(report, 4, rng) is report
    # the instruction stage files carry them, the blind model's too (same text)
    train = [s for s in train if s.task in DEMO_TASKS]
    for blind in (False, True):
        paths = stage_datasets(train, tmp_path / str(blind), seed=0, source=minirad, question_rounds=4, blind=blind)
        rounds = [sum(t.role == "assistant" for t in s.turns) for s in read_samples(paths["task-balanced"]) if s.task == "radbench/diagnosis-judgement"]
        assert max(rounds) > 1 and min(rounds) == 1


def test_report_rounds_open_each_question_with_the_report_of_its_own_image(minirad, tmp_path):
    train = [s for s in read_samples(minirad / "train.jsonl") if s.task in DEMO_TASKS]
    reports = exam_reports(train)
    questions = [s for s in train if s.task == "radbench/diagnosis-judgement"]
    opened = 0
    for question in questions:
        after = with_report_round(question, reports)
        report = reports.get(question.images[0].exam)
        if report is None:
            assert after is question
            continue
        opened += 1
        assert report.images[0].exam == question.images[0].exam and len(report.turns) == 2  # one exam, one report
        assert after.turns[:2] == report.turns and after.images == question.images  # the image once, in the report's round
        assert [t.text for t in after.turns[2:]] == [t.text for t in question.turns]  # then the questions, their image not repeated
        assert not any(isinstance(p, ImagePart) for t in after.turns[2:] for p in t.content)
        assert after.turns[1].text.startswith("[Findings]")
    assert opened > len(questions) // 2
    other = next(s for s in train if s.task in REPORT_TASKS)
    assert with_report_round(other, reports) is other
    for blind in (False, True):  # in the stages asked for, the blind model's too (same text)
        paths = stage_datasets(train, tmp_path / str(blind), seed=0, source=minirad, report_rounds=("disease-balanced",), blind=blind)
        for stage, opened in (("task-balanced", False), ("disease-balanced", True)):
            asked = [s for s in read_samples(paths[stage]) if s.task == "radbench/diagnosis-judgement"]
            with_report = sum(s.turns[1].text.startswith("[Findings]") for s in asked)
            assert with_report > len(asked) // 2 if opened else with_report == 0
            assert all(len(s.images) == (0 if blind else 1) for s in asked)


def test_course_rounds_put_a_follow_up_report_after_its_prior_exam_with_its_course(minirad, tmp_path):
    """--course-rounds: a follow-up exam's report round comes after the round of the exam before it,
    and keeps what it says about that exam; a first exam's report round is as without it."""
    from medmllm.demo.benchmark import change_terms

    train = [s for s in read_samples(minirad / "train.jsonl") if s.task in DEMO_TASKS]
    alone, after_prior = exam_reports(train), exam_reports(train, prior=True)
    assert alone.keys() == after_prior.keys()
    follow_ups = [exam for exam, r in after_prior.items() if len(r.images) == 2]
    assert follow_ups and all(len(r.images) == 1 for r in alone.values())
    for exam in after_prior:
        prior, alone_report = after_prior[exam], alone[exam]
        if exam not in follow_ups:
            assert prior == alone_report  # a first exam: nothing before it
            continue
        assert prior.images[-1].exam == exam and prior.images[0].exam != exam and len(prior.turns) == 4
        assert prior.turns[3].text != alone_report.turns[1].text or not change_terms(prior.turns[3].text).any()  # its course, kept
    assert sum(change_terms(after_prior[e].turns[3].text).any() for e in follow_ups) > len(follow_ups) // 2
    assert not any(change_terms(r.turns[1].text).any() for r in alone.values())
    question = next(s for s in train if s.task == "radbench/diagnosis-judgement" and s.images[0].exam in follow_ups)
    opened = with_report_round(question, after_prior)
    assert opened.images[-1].path == question.images[0].path and len(opened.images) == 2  # the prior exam's image first
    assert [p.image for t in opened.turns for p in t.content if isinstance(p, ImagePart)] == [0, 1]  # each image once
    assert [t.text for t in opened.turns[4:]] == [t.text for t in question.turns]
    paths = stage_datasets(train, tmp_path, seed=0, source=minirad, report_rounds=("disease-balanced",), course_rounds=True)
    asked = [s for s in read_samples(paths["disease-balanced"]) if s.task == "radbench/diagnosis-judgement"]
    assert any(len(s.images) == 2 for s in asked) and any(len(s.images) == 1 and s.turns[1].text.startswith("[Findings]") for s in asked)


def test_a_report_asked_of_one_image_says_nothing_of_a_prior_exam(minirad, tmp_path):
    """The single-exam stage and the report rounds ask a follow-up exam's report of its image alone:
    its course since the prior exam is left out. The visits' conversations, where the prior exam is
    before it, keep it, and so does --no-mrc (P2Med's ablation trains on the reports as written)."""
    train = [s for s in read_samples(minirad / "train.jsonl") if s.task in DEMO_TASKS]
    assert any("prior exam" in t.text for s in train for t in s.turns)

    def prior(path, one_image: bool) -> int:
        return sum("prior exam" in t.text for s in read_samples(path) if (len(s.images) == 1) == one_image for t in s.turns)

    paths = stage_datasets(train, tmp_path / "mrc", seed=0, source=minirad, single_exam_stages=("task-balanced",),
                           report_rounds=("disease-balanced",), report_share=(20.0, 20.0))
    asked = [s for s in read_samples(paths["disease-balanced"]) if s.task == "radbench/diagnosis-judgement"]
    assert sum(s.turns[1].text.startswith("[Findings]") for s in asked) > len(asked) // 2  # report rounds are there
    follow_up_alone = [s for s in read_samples(paths["task-balanced"]) if s.task in REPORT_TASKS and not s.id.split("/")[1].endswith("-e1")]
    assert follow_up_alone and all(len(s.images) == 1 for s in follow_up_alone)  # stage 2 asks follow-ups alone
    assert prior(paths["task-balanced"], True) == prior(paths["disease-balanced"], True) == 0
    assert prior(paths["disease-balanced"], False) > 0  # the visits' conversations
    no_mrc = stage_datasets(train, tmp_path / "no-mrc", seed=0, source=minirad, mrc=False, single_exam_stages=("task-balanced",),
                            report_share=(20.0, 20.0))
    assert prior(no_mrc["task-balanced"], True) > 0 and prior(no_mrc["disease-balanced"], True) > 0


def test_first_exams_have_no_earlier_report_and_follow_ups_have_them_unless_no_mrc(minirad):
    held_out = list(read_samples(minirad / "test.jsonl")) + list(read_samples(minirad / "val.jsonl"))
    firsts = first_exams(held_out)
    assert firsts and all(len(s.images) == 1 and sum(t.role == "assistant" for t in s.turns) == 1 for s in firsts)
    with_priors, alone = follow_ups(held_out), follow_ups(held_out, mrc=False)
    assert with_priors and len(with_priors) == len(alone)
    for conversation, single in zip(with_priors, alone):
        rounds = sum(t.role == "assistant" for t in conversation.turns)
        assert rounds >= 2 and len(conversation.images) == rounds  # the earlier exams and their reports come first
        assert len(single.images) == 1 and single.turns[-1].text == conversation.turns[-1].text  # the same last exam, alone


def test_change_terms_read_minirads_impressions():
    assert change_terms("Left pneumothorax, unchanged.").tolist() == [True, False, False, False]
    assert change_terms("Right lower lobe mass, increased in size compared with the prior exam.").tolist() == [False, True, False, False]
    assert change_terms("Stable cardiomegaly. Interval resolution of the left pleural effusion.").tolist() == [True, False, False, True]
    assert not change_terms("Right middle lobe atelectasis.").any()
    references = ["Left pneumothorax, unchanged.", "Mass, decreased in size compared with the prior exam.", "Interval resolution of the effusion."]
    assert change_f1(list(zip(references, references)))["value"] == 1.0
    # one right (unchanged), one wrong (increased for decreased: a false positive and a false negative), one missed
    guessed = ["Stable left pneumothorax.", "Mass, increased in size compared with the prior exam.", "Effusion."]
    result = change_f1(list(zip(guessed, references)))
    assert result["value"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 2)) and result["n"] == 3


def test_shuffled_label_f1_tells_a_model_that_sees_from_one_that_writes_the_same_findings():
    findings = ["Cardiomegaly.", "Large left pleural effusion.", "Right lower lobe atelectasis.", "The lungs are clear."] * 10
    seeing = shuffled_label_f1(list(zip(findings, findings)))  # each report right for its own exam
    assert seeing["value"] < 0.5 and seeing["p"] == 0.0 and seeing["n"] == 40
    blind = shuffled_label_f1([("Cardiomegaly. Large left pleural effusion.", r) for r in findings])  # one report for all
    assert blind["p"] == 1.0  # shuffling identical reports changes nothing


def test_paired_differences_pair_the_two_models_on_the_same_ids(tmp_path):
    from medmllm.data import text_turn, write_samples
    from medmllm.data.schema import Sample
    from medmllm.demo import ACCURACY, LABEL_F1, label_f1

    findings = ["Cardiomegaly.", "Large left pleural effusion.", "Right lower lobe atelectasis.", "The lungs are clear."] * 10
    bench = tmp_path / "reports.jsonl"
    write_samples(bench, [Sample(id=f"r{i}", task="p2med/report-xray", turns=[text_turn("user", "Report?"), text_turn("assistant", ref)])
                          for i, ref in enumerate(findings)])

    def model(name: str, reports: list[str], right: list[bool]) -> Path:
        folder = tmp_path / name
        for part, rows in (("reports", [{"id": f"r{i}", "prediction": text} for i, text in enumerate(reports)]),
                           ("diagnosis", [{"id": f"q{i}", "accuracy": float(ok)} for i, ok in enumerate(right)])):
            (folder / part).mkdir(parents=True)
            name_of = "predictions.jsonl" if part == "reports" else "per_sample.jsonl"
            (folder / part / name_of).write_text("".join(json.dumps(row) + "\n" for row in rows[::-1]))  # order must not matter
        return folder

    # the trained model: every report right, 70 of 100 answers; the blind one: one report for all, 50 of 100
    trained = model("trained", findings, [i % 10 < 7 for i in range(100)])
    blind = model("blind", ["Cardiomegaly."] * len(findings), [i % 2 == 0 for i in range(100)])
    benches = {"reports": bench}
    paired = paired_differences(trained, blind, benches, benches, resamples=2000)
    assert paired[ACCURACY]["n"] == 100 and paired[ACCURACY]["difference"] == pytest.approx(0.2)
    expected = label_f1(list(zip(findings, findings)))["value"] - label_f1([("Cardiomegaly.", r) for r in findings])["value"]
    assert paired[LABEL_F1]["n"] == 40 and paired[LABEL_F1]["difference"] == pytest.approx(expected) and expected > 0.3
    assert all(v["ci95"][0] > 0 and v["p"] < 0.01 for v in paired.values())
    same = paired_differences(blind, blind, benches, benches, resamples=2000)  # a model against itself: no difference
    assert all(v["difference"] == 0 and v["ci95"] == [0, 0] and v["p"] == 1.0 for v in same.values())


def test_overlap_of_intervals():
    assert overlap({"ci95": [0.1, 0.3]}, {"ci95": [0.2, 0.4]}) is True
    assert overlap({"ci95": [0.1, 0.2]}, {"ci95": [0.3, 0.4]}) is False
    assert overlap({"ci95": [None, None]}, {"ci95": [0.3, 0.4]}) is None


def test_demo_pipeline_on_the_tiny_preset(tmp_path):
    recipe = tmp_path / "tiny-demo.yaml"
    stage = {"train": {"vision": True, "perceiver": True}, "max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0}
    recipe.write_text(json.dumps({
        "model": {"preset": "tiny"}, "data": {"max_tokens": 4096}, "run": {"output_dir": "run", "save_steps": None, "report_to": [], "eval_generate": 0},
        "stages": [{"name": "knowledge", "data": {"train": "k.jsonl"}, **stage},
                   {"name": "task-balanced", "data": {"train": "t.jsonl"}, "lora": {"r": 2, "alpha": 4, "dropout": 0.0}, **stage},
                   {"name": "disease-balanced", "data": {"train": "d.jsonl"}, **stage, "train": {"llm": True}}]}))  # the LLM's own weights
    lines: list[str] = []
    summary = run_demo(DemoConfig(out=tmp_path / "out", n=200, seed=1, recipe=recipe, eval_limits={"diagnosis": None, "reports": 12, "follow-up": 6}, benchmark_draw=0.1, max_new_tokens=8, log=lines.append))
    out = tmp_path / "out"
    # The benchmark-only draw: other patients than the first draw's, all held out, their questions asked
    # too, every image of every benchmark part found from where its JSONL lies.
    first = {s.patient_id for s in read_samples(out / "minirad" / "samples.jsonl")}
    more = {s.patient_id for s in read_samples(out / "minirad-benchmark" / "test.jsonl")}
    assert more and not more & first and not (out / "minirad-benchmark" / "train.jsonl").read_text()
    asked_ids = {s.patient_id for s in read_samples(out / "data" / "benchmark" / "diagnosis.jsonl")}
    assert asked_ids & more and asked_ids & first
    for part in ("diagnosis", "reports", "follow-up"):
        bench = out / "data" / "benchmark" / f"{part}.jsonl"
        assert all((bench.parent / ref.path).is_file() for s in read_samples(bench) for ref in s.images)
    from_first = [s.patient_id in first for s in read_samples(out / "data" / "benchmark" / "reports.jsonl")]
    assert from_first[0] and from_first == sorted(from_first, reverse=True)  # the first draw's exams first (the limits take those)
    assert summary["config"]["benchmark_draw"] == 0.1 and any(line.startswith("benchmark only: 20 samples") for line in lines)
    assert set(summary["numbers"]) == {"trained", "untrained", "blind"}
    for name in ("trained", "untrained", "blind"):
        for part in ("diagnosis", "reports"):
            assert (out / "eval" / name / part / "report.html").exists() and (out / "eval" / name / part / "metrics.json").exists()
        accuracy = summary["numbers"][name]["diagnosis accuracy"]
        assert accuracy["value"] is None or 0.0 <= accuracy["value"] <= 1.0
    # Three seeing stages, two blind ones: those that train the LLM, with LoRA or its own weights (stage 1
    # trains only the vision path, which the blind model lacks).
    assert [p.name for p in sorted((out / "run").iterdir()) if p.is_dir()] == ["disease-balanced", "knowledge", "task-balanced"]
    assert sorted(p.name for p in (out / "run-blind").iterdir() if p.is_dir()) == ["disease-balanced", "task-balanced"]
    assert all(not s.images for part in ("diagnosis", "reports") for s in read_samples(out / "data" / "benchmark-blind" / f"{part}.jsonl"))
    assert all(s.images for s in read_samples(out / "data" / "benchmark" / "diagnosis.jsonl"))
    assert summary["numbers"]["trained"]["clinical label F1 (micro, 5 observations)"]["n"] > 0
    reports = list(read_samples(out / "data" / "benchmark" / "reports.jsonl"))
    assert reports and all(sum(t.role == "assistant" for t in s.turns) == 1 for s in reports)  # first exams: no earlier report to copy
    assert (out / "eval" / "trained" / "follow-up" / "metrics.json").exists() and not (out / "eval" / "blind" / "follow-up").exists()
    assert set(summary["label_f1_shuffled"]) == {"trained", "untrained", "blind"}
    for label, paired in summary["trained_minus_blind"].items():  # the same samples, paired
        if paired["difference"] is not None:
            assert paired["difference"] == pytest.approx(summary["numbers"]["trained"][label]["value"] - summary["numbers"]["blind"][label]["value"])
    assert any(line.startswith("trained - blind on the same questions and exams (paired bootstrap)") for line in lines)
    from medmllm.demo import summary_markdown

    better = {**summary, "comparison": {label: {**c, "trained_better": True} for label, c in summary["comparison"].items()}}
    unseeing = {**better, "label_f1_shuffled": {**summary["label_f1_shuffled"], "trained": {"value": 0.1, "p": 0.44, "n": 12}}}
    assert "not from the image" in summary_markdown(unseeing)
    seeing = {**better, "label_f1_shuffled": {**summary["label_f1_shuffled"], "trained": {"value": 0.1, "p": 0.0, "n": 12}}}
    assert "not from the image" not in summary_markdown(seeing)
    worse = {**unseeing, "comparison": {label: {**c, "trained_better": False} for label, c in summary["comparison"].items()}}
    assert "not from the image" not in summary_markdown(worse)  # nothing to qualify when it is not better
    assert set(summary["follow_up"]) == {"impression label F1", "impression change F1"} and summary["follow_up"]["impression change F1"]["n"] > 0
    assert (out / "summary.md").read_text().startswith("# medmllm demo")
    asked = list(read_samples(out / "data" / "benchmark" / "diagnosis.jsonl"))
    assert summary["always_no_accuracy"] == sum(s.targets["answer"] == "no" for s in asked) / len(asked) == 0.5  # as many "no" as "yes"
    assert f"accuracy {summary['always_no_accuracy']:.3f}" in (out / "summary.md").read_text()
    assert any("balanced overall" in line for line in lines)  # n=200: too few questions of any one finding
    assert summary["diagnosis_balance"] == "overall" and "ones overall, so no fixed answer" in (out / "summary.md").read_text()
    assert set(summary["timings_s"]) >= {"MiniRad", "train (3 stages)", "evaluate on the held-out MiniRad patients"}
    assert summary["config"]["report_rounds"] == ["disease-balanced"]  # stage 3's questions open with their image's report
    assert summary["config"]["single_exam_stages"] == ["task-balanced"]  # stage 2's reports: one exam each
    assert all(len(s.images) == 1 for s in read_samples(out / "data" / "seeing" / "task-balanced.jsonl") if s.task in REPORT_TASKS)
    assert any(s.turns[1].text.startswith("[Findings]") for s in read_samples(out / "data" / "blind" / "disease-balanced.jsonl")
               if s.task == "radbench/diagnosis-judgement")
    assert summary["config"]["precision"] in ("fp32", "bf16") and f"precision: {summary['config']['precision']} (run.precision: auto)" in lines


def test_demo_cli_asks_as_many_question_rounds_as_the_config():
    """The CLI's --question-rounds default is DemoConfig's: `make demo` runs the recipe the docs report."""
    import inspect

    from medmllm.cli.demo import demo, stage_names

    assert inspect.signature(demo).parameters["question_rounds"].default.default == DemoConfig.question_rounds == 4
    assert inspect.signature(demo).parameters["benchmark_draw"].default.default == DemoConfig.benchmark_draw
    assert inspect.signature(demo).parameters["course_rounds"].default.default is DemoConfig.course_rounds is False
    assert inspect.signature(demo).parameters["report_rounds"].default.default is True and DemoConfig.report_rounds == ("disease-balanced",)
    single = inspect.signature(demo).parameters["single_exam_stages"].default.default
    assert stage_names(single) == DemoConfig.single_exam_stages == ("task-balanced",)
    assert stage_names("none") == () and stage_names("task-balanced, disease-balanced") == ("task-balanced", "disease-balanced")


@pytest.mark.parametrize("args, message", [(["--single-exam-stages", "stage-2"], "stage-2: not an instruction stage"),
                                           (["--n", "abc"], "Invalid value for '--n'")])
def test_demo_cli_usage_errors_are_one_line_before_any_work(tmp_path, args, message):
    """Through the real entry point (`main`): a usage error is a message and exit 2, never a traceback
    (typer 0.29 raises its own copy of click's exceptions, which `main` once let through)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "medmllm", "demo", "-o", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
