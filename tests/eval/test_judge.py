"""The LLM judge: answer parsing, prompts as data, the real `openai` client against a fake
OpenAI-compatible server, retries and counted failures, resume, the CLI, and a local tiny Llama."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medmllm.errors import MedMLLMError
from medmllm.eval.judge import Judge, JudgeOutputError, OpenAIChat, TransformersChat, criterion_keys, judge_file, parse_judgement, summarize
from medmllm.eval.judge_prompts import PROMPT_VERSION, SCALES, TASKS, build_messages
from tests.eval.fake_openai import FakeOpenAI, HTTPError

REPORT_REF = "[Findings] Patchy exudative shadows in both lower lungs. The heart is not enlarged. \n [Impression] Bronchopneumonia."
REPORT_PRED = "[Findings] Patchy shadow in the right lower lung. \n [Impression] Pneumonia."


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text", [
    '{"reason": "mostly right", "score": 4}',
    'Here is my evaluation:\n```json\n{"reason": "mostly right", "score": 4}\n```\nThanks.',
    'Sure! {"reason": "mostly right", "score": "4"} I hope this helps.',
    '<think>{"score": 1}</think>{"score": 4.0, "reason": "mostly right"}',
    '{"note": "no score"} then {"reason": "mostly right", "score": 4}',
])
def test_parse_judgement_finds_the_json_in_prose_and_fences(text):
    assert parse_judgement(text).score == 4 and parse_judgement(text).reason == "mostly right"


@pytest.mark.parametrize(("text", "error"), [
    ("The score is 4.", "no JSON object"),
    ('{"reason": "x", "score": 7}', "outside 1..5"),
    ('{"reason": "x", "score": 0}', "outside 1..5"),
    ('{"reason": "x", "score": 3.5}', "integer"),
    ('{"reason": "x", "score": "four"}', "integer"),
    ('{"reason": "x", "score": true}', "integer"),
    ('{"score": 3}', "reason"),
    ('{"reason": "x", "score": 3', "no JSON object"),
])
def test_parse_judgement_rejects_invalid_answers(text, error):
    with pytest.raises(JudgeOutputError, match=error):
        parse_judgement(text)


# ------------------------------------------------------------------------------ prompts as data


def test_every_judged_task_matches_its_template_and_scores_its_key_target_on_both_criteria():
    from medmllm.data.templates import get_template

    for name, task in TASKS.items():
        template = get_template(name)
        sections = template.parse("")
        assert [c.key for c in task.components] == list(sections), name
        for component in task.components:
            assert "accuracy" in component.criteria
            assert set(component.example.judgements) == set(component.criteria)
            assert all(1 <= score <= 5 and reason for score, reason in component.example.judgements.values())
        # P2Med scores its key component (the template's key target) on accuracy and comprehensiveness
        key_target = getattr(template, "key_target", "impression")
        assert [c.key for c in task.components if len(c.criteria) == 2] == [key_target], name
    assert criterion_keys("p2med/report-xray") == ["findings.accuracy", "impression.accuracy", "impression.comprehensiveness"]
    assert criterion_keys("p2med/outpatient-record")[:2] == ["preliminary_diagnosis.accuracy", "preliminary_diagnosis.comprehensiveness"]


def test_the_messages_carry_fig2_scale_the_one_shot_example_and_the_sample():
    task = TASKS["p2med/report-xray"]
    messages = build_messages(task, task.components[0], "accuracy", "ref text", "pred text")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert system.startswith("You are a professional radiologist specializing in respiratory radiology.")
    assert "Taking the radiologist-written findings as the ground truth, rated at 5 points" in system
    for i, line in enumerate(SCALES["accuracy"], start=1):
        assert f"{i} - {line}" in system
    assert "a patchy exudative shadow seen in the left lower lung" in messages[2]["content"]
    assert json.loads(messages[2]["content"])["score"] == 4
    assert messages[3]["content"] == "[Radiologist-written findings] ref text\n[AI-generated findings] pred text"


# ------------------------------------------------------------------------------ the judge through the openai client


def _criterion(request: dict) -> str:
    return "comprehensiveness" if "score the comprehensiveness" in request["messages"][0]["content"] else "accuracy"


def flaky_judge(request: dict) -> str:
    """Accuracy: JSON wrapped in prose. Comprehensiveness: garbage first, valid after the correction."""
    last = request["messages"][-1]["content"]
    if _criterion(request) == "accuracy":
        return 'My analysis follows.\n```json\n{"reason": "The location is partly wrong.", "score": 3}\n```'
    if last.startswith("Your answer could not be read"):
        return '{"reason": "Misses the left lung.", "score": 2}'
    return "I would give it a two."


@pytest.fixture
def server():
    with FakeOpenAI(flaky_judge) as fake:
        yield fake


def test_judge_scores_through_the_openai_client_with_a_retry(server):
    judge = Judge(OpenAIChat(server.base_url, "fake-judge"), "p2med/report-xray", retries=2)
    row = judge.judge_sample("cxr-1", REPORT_PRED, REPORT_REF)
    assert row["findings.accuracy"] == 3 and row["impression.accuracy"] == 3 and row["impression.comprehensiveness"] == 2
    assert row["reasons"]["impression.comprehensiveness"] == "Misses the left lung."
    assert row["failures"] == {} and row["attempts"] == 4
    assert (row["judge_model"], row["prompt_version"], row["task"]) == ("fake-judge", PROMPT_VERSION, "p2med/report-xray")
    assert len(server.requests) == 4
    retry = server.requests[-1]
    assert retry["messages"][-2] == {"role": "assistant", "content": "I would give it a two."}
    assert 'no JSON object with a "score"' in retry["messages"][-1]["content"]
    assert all(r["temperature"] == 0 and r["model"] == "fake-judge" for r in server.requests)
    # the components were split with the report parser: the judge saw only the impression
    assert "[AI-generated impression] Pneumonia." in retry["messages"][3]["content"]


def test_an_answer_that_stays_invalid_is_a_counted_failure_not_a_zero():
    with FakeOpenAI(lambda request: '{"reason": "too good", "score": 9}') as fake:
        judge = Judge(OpenAIChat(fake.base_url, "fake-judge"), "p2med/report-xray", retries=1)
        row = judge.judge_sample("cxr-1", REPORT_PRED, REPORT_REF)
        assert len(fake.requests) == 3 * 2
    assert row["findings.accuracy"] is None
    assert row["failures"]["findings.accuracy"] == '"score" 9 is outside 1..5 (2 attempts)'
    [findings, *_] = summarize([row], "p2med/report-xray")
    assert findings["n"] == 0 and findings["failed"] == 1


def test_missing_sections_are_scored_1_or_skipped_without_asking(server):
    judge = Judge(OpenAIChat(server.base_url, "fake-judge"), "p2med/report-xray")
    row = judge.judge_sample("cxr-2", "[Findings] Clear lungs.", "[Impression] Normal chest.")
    assert server.requests == []
    assert row["findings.accuracy"] is None and row["skipped"] == ["findings.accuracy"]
    assert row["impression.accuracy"] == 1 and row["missing"] == ["impression.accuracy", "impression.comprehensiveness"]


def test_http_errors_end_the_run_with_one_line():
    def refuse(request):
        raise HTTPError(404, "model 'nope' does not exist")

    with FakeOpenAI(refuse) as fake:
        judge = Judge(OpenAIChat(fake.base_url, "nope"), "p2med/report-xray")
        with pytest.raises(MedMLLMError, match="answered HTTP 404"):
            judge.judge_sample("x", REPORT_PRED, REPORT_REF)


def test_unknown_task_is_one_line():
    with pytest.raises(MedMLLMError, match="judged tasks: p2med/report-xray"):
        criterion_keys("radbench/vqa")


# ------------------------------------------------------------------------------ files, resume, CLI


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_judge_file_resumes_and_refuses_another_judges_file(server, tmp_path):
    refs = _write(tmp_path / "ref.jsonl", [{"id": f"s{i}", "reference": REPORT_REF} for i in range(4)])
    preds = _write(tmp_path / "pred.jsonl", [{"id": f"s{i}", "prediction": REPORT_PRED} for i in range(3)] + [{"id": "extra", "prediction": "x"}])
    out = tmp_path / "judged.jsonl"
    judge = Judge(OpenAIChat(server.base_url, "fake-judge"), "p2med/report-xray")
    run = judge_file(judge, preds, refs, out, concurrency=3)
    assert (run.judged, run.resumed, run.predictions_without_reference, run.references_without_prediction) == (3, 0, 1, 1)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["s0", "s1", "s2"]  # input order
    asked = len(server.requests)

    _write(preds, [{"id": f"s{i}", "prediction": REPORT_PRED} for i in range(4)])
    out.write_text(out.read_text() + '{"id": "s3", "task": "p2me')  # a run killed mid-line
    run = judge_file(judge, preds, refs, out)
    assert (run.judged, run.resumed) == (1, 3)
    assert len(server.requests) == asked + 4  # only s3: 3 criteria, one retry
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["s0", "s1", "s2", "s3"]

    other = Judge(OpenAIChat(server.base_url, "another-judge"), "p2med/report-xray")
    with pytest.raises(MedMLLMError, match="judge_model 'fake-judge', not 'another-judge'"):
        judge_file(other, preds, refs, out)


def test_references_can_be_samples_with_targets(server, tmp_path):
    sample = {"id": "s0", "task": "p2med/report-xray", "turns": [
        {"role": "user", "content": [{"type": "text", "text": "Write the report."}]},
        {"role": "assistant", "content": [{"type": "text", "text": REPORT_REF}]},
    ], "targets": {"findings": "Patchy exudative shadows in both lower lungs.", "impression": "Bronchopneumonia."}}
    refs = _write(tmp_path / "samples.jsonl", [sample])
    preds = _write(tmp_path / "pred.jsonl", [{"id": "s0", "output": REPORT_PRED}])
    run = judge_file(Judge(OpenAIChat(server.base_url, "fake-judge"), "p2med/report-xray"), preds, refs, tmp_path / "o.jsonl")
    assert run.rows[0]["impression.comprehensiveness"] == 2
    assert "[Radiologist-written impression] Bronchopneumonia." in server.requests[-1]["messages"][3]["content"]


def test_eval_judge_cli(server, tmp_path):
    from medmllm.cli import app

    refs = _write(tmp_path / "ref.jsonl", [{"id": f"s{i}", "reference": REPORT_REF} for i in range(3)])
    preds = _write(tmp_path / "pred.jsonl", [{"id": f"s{i}", "prediction": REPORT_PRED} for i in range(3)])
    args = ["eval", "judge", "--pred", str(preds), "--ref", str(refs), "--task", "p2med/report-xray", "-o", str(tmp_path / "j.jsonl"),
            "--endpoint", server.base_url, "--api-model", "fake-judge"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"judged 3 sample(s), 0 kept from before; judge fake-judge, prompt {PROMPT_VERSION}" in result.output
    assert any(line.split()[:4] == ["impression.comprehensiveness", "3", "2.00", "(2.00,"] for line in result.output.splitlines())
    again = CliRunner().invoke(app, [*args, "--json"])
    summary = json.loads(again.output)
    assert summary["judged"] == 0 and summary["resumed"] == 3 and summary["criteria"][0]["mean"] == 3.0

    bad = CliRunner().invoke(app, ["eval", "judge", "--pred", str(preds), "--ref", str(refs), "--task", "p2med/report-xray", "-o", "x.jsonl"])
    assert isinstance(bad.exception, MedMLLMError) and "either --endpoint" in str(bad.exception)


# ------------------------------------------------------------------------------ a local model


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from medmllm.model.tokenizer import tiny_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=16384, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_local_judge_uses_the_chat_template_and_counts_garbage_as_a_failure(tiny_llama):
    backend = TransformersChat(tiny_llama, max_new_tokens=6, device="cpu")
    task = TASKS["p2med/report-xray"]
    messages = build_messages(task, task.components[0], "accuracy", "Clear lungs.", "Clear lungs.")
    prompt = backend.render(messages)
    assert prompt.startswith("<|im_start|>system\nYou are a professional radiologist")
    assert prompt.count("<|im_start|>user\n") == 2 and prompt.endswith("<|im_start|>assistant\n")

    judge = Judge(backend, "p2med/report-xray", retries=1)
    component = task.components[0]
    first = judge.score(component, "accuracy", "Clear lungs.", "Clear lungs.")
    assert first.score is None and first.attempts == 2 and "no JSON object" in first.error
    assert judge.score(component, "accuracy", "Clear lungs.", "Clear lungs.") == first  # greedy: the same garbage every time
    assert backend.complete(messages) == backend.complete(messages)


def test_local_judge_needs_a_model_folder(tmp_path):
    with pytest.raises(MedMLLMError, match="not a model folder"):
        TransformersChat(tmp_path)
