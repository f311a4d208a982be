"""The reformat engine against a fake OpenAI-compatible server: answers, failures, cache, resume."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
import time
from collections import Counter

import pytest
from fastapi.responses import JSONResponse

from medmllm.data import read_samples
from medmllm.errors import MedMLLMError
from medmllm.reformat import prompts
from medmllm.reformat.engine import (
    AnswerError,
    EngineConfig,
    draw,
    parse_mllm_answer,
    read_records,
    reformat_file,
    repair_json,
)
from tests.eval.fake_openai import FakeOpenAI, HTTPError
from tests.reformat import CONTEXT, GOOD_ANSWER, make_records, record_of

GOOD = json.dumps(GOOD_ANSWER)


class UsageFake(FakeOpenAI):
    """`FakeOpenAI` whose answers report usage: 100 prompt tokens, 10 completion tokens each."""

    def _app(self):
        app = super()._app()

        @app.middleware("http")
        async def usage(request, call_next):
            response = await call_next(request)
            if response.status_code != 200 or not request.url.path.endswith("/chat/completions"):
                return response
            body = json.loads(b"".join([chunk async for chunk in response.body_iterator]))
            body["usage"] = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
            return JSONResponse(body)

        return app


def config(server, **kw) -> EngineConfig:
    return EngineConfig(endpoint=server.base_url, model=server.model, backoff=0.005, max_backoff=0.05, **kw)


def by_record(path) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in read_samples(path):
        out.setdefault(s.meta["record_id"], []).append(s)
    return out


# ------------------------------------------------------------------------------------- prompts


def test_prompts_are_the_papers():
    assert len(prompts.SCENARIOS) == 10 and len(set(prompts.SCENARIO_PROMPTS)) == 10
    assert all(p.startswith("You need to generate a question-and-answer pair based on this image.") for _, p in prompts.SCENARIOS)
    assert len(prompts.SINGLE_IMAGE_QUESTIONS) == len(prompts.MULTI_IMAGE_QUESTIONS) == 11
    text = prompts.mllm_prompt("Doctor to Doctor", "CT {with braces} shows a mass.")
    assert text.startswith("Please complete the following tasks based on the medical images")
    assert '{ "Image_description" : ..., "QA-query" : ..., "QA-answer" : ... }' in text  # the paper's {{ }} rendered as braces
    assert "2. You need to generate a question-and-answer pair based on this image. This pair should be a professional discussion" in text
    assert text.endswith("<reference>\nCT {with braces} shows a mass.\n</reference>")
    assert "<Image Context Information>: a caption" in prompts.llm_prompt("a caption")


def test_draw_is_seeded_per_record_and_covers_the_lists():
    assert draw("r1", 0, 1) == draw("r1", 0, 1)
    draws = [draw(f"r{i}", 0, 1) for i in range(300)]
    assert {s for s, _ in draws} == set(prompts.SCENARIO_PROMPTS)
    assert {q for _, q in draws} == set(prompts.SINGLE_IMAGE_QUESTIONS)
    assert {draw(f"r{i}", 0, 2)[1] for i in range(300)} == set(prompts.MULTI_IMAGE_QUESTIONS)
    assert [draw(f"r{i}", 1, 1) for i in range(300)] != draws


# ------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text", [
    GOOD,
    f"Sure! Here is the JSON:\n```json\n{GOOD}\n```\nHope it helps.",
    "<think>the image shows {a liver}</think>" + GOOD,
    GOOD.replace('"}', '",}'),  # trailing comma
    GOOD.replace("with rim enhancement.", "with rim\nenhancement."),  # a raw newline inside a string
    json.dumps({"image description": GOOD_ANSWER["Image_description"], "QA_query": GOOD_ANSWER["QA-query"], "qa-answer": GOOD_ANSWER["QA-answer"]}),
])
def test_parse_reads_and_repairs_answers(text):
    answer = parse_mllm_answer(text)
    assert answer["QA-query"] == GOOD_ANSWER["QA-query"]
    assert answer["Image_description"].replace("\n", " ") == GOOD_ANSWER["Image_description"]


def test_repair_closes_a_truncated_answer():
    cut = GOOD[: GOOD.index("in keeping")]  # max_tokens hit inside the last string
    assert json.loads(repair_json(cut))["QA-answer"] == "A hypodense lesion with peripheral enhancement, "
    assert json.loads(repair_json('{"a": [1, 2,')) == {"a": [1, 2]}


@pytest.mark.parametrize("text, why", [
    ("I cannot help with that.", "no JSON object"),
    (json.dumps({"Image_description": "x", "QA-query": "y"}), "no JSON object"),
    (json.dumps({**GOOD_ANSWER, "QA-answer": "  "}), "non-empty string"),
    (json.dumps({**GOOD_ANSWER, "QA-answer": 3}), "non-empty string"),
    (json.dumps({**GOOD_ANSWER, "QA-answer": "As the reference information says, an abscess."}), "mentions the reference"),
])
def test_parse_refuses_unusable_answers(text, why):
    with pytest.raises(AnswerError, match=why):
        parse_mllm_answer(text)


# -------------------------------------------------------------------------------------- input


def test_read_records_both_formats_and_reasons(tmp_path):
    from medmllm.data import text_turn, write_samples
    from medmllm.data.schema import ImagePart, ImageRef, Sample, TextPart, Turn

    src = make_records(tmp_path, 2)
    rows = [json.loads(x) for x in src.read_text().splitlines()]
    rows += [dict(rows[0]), {"id": "gone", "images": ["img/none.png"], "context": "CT"}, {"id": "blank", "images": ["img/0-0.png"], "context": " "}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, dropped = read_records(src)
    assert [r.id for r in records] == ["r0", "r1"] and records[0].image_paths[0] == tmp_path / "img" / "0-0.png"
    assert dropped == [("r0", "duplicate-id"), ("gone", "image-missing"), ("blank", "empty-context")]

    sample = Sample(id="s1", task="caption", images=[ImageRef(path="img/0-0.png")],
                    turns=[Turn(role="user", content=[ImagePart(image=0), TextPart(text="Describe.")]), text_turn("assistant", "Chest X-ray: effusion.")])
    write_samples(tmp_path / "samples.jsonl", [sample])
    records, _ = read_records(tmp_path / "samples.jsonl")
    assert records[0].context == "Chest X-ray: effusion." and records[0].image_paths == (tmp_path / "img" / "0-0.png",)

    (tmp_path / "bad.jsonl").write_text('{"id": "x", "images": "a.png", "context": "c"}\n')
    with pytest.raises(MedMLLMError, match=r"bad.jsonl:1: 'images' must be a list"):
        read_records(tmp_path / "bad.jsonl")


# ---------------------------------------------------------------------------------- end to end


def test_flaky_server_gives_one_valid_pair_per_input(tmp_path):
    """20% of calls 429/500, broken JSON sometimes (repairable or not): every record still gives its pair."""
    src = make_records(tmp_path, 12, images_per_record=1)
    rng, lock = random.Random(7), threading.Lock()

    def respond(request):
        with lock:
            roll = rng.random()
        if roll < 0.1:
            raise HTTPError(429, "slow down")
        if roll < 0.2:
            raise HTTPError(500, "internal")
        if roll < 0.3:
            return "```json\n" + GOOD.replace('"}', '",}') + "\n```"  # repairable
        if roll < 0.4:
            return "The image shows a liver lesion."  # not JSON: a correction is sent
        return GOOD

    with UsageFake(respond, model="vision-model") as server:
        summary = reformat_file(src, tmp_path / "out.jsonl", config(server, concurrency=4, price_per_1k_in=1.0, price_per_1k_out=2.0))
        requests = list(server.requests)
    samples = list(read_samples(tmp_path / "out.jsonl"))
    assert [s.id for s in samples] == [f"r{i}/{kind}" for i in range(12) for kind in ("alignment", "instruction")]  # input order
    assert summary["records_written"] == 12 and summary["failed"] == {}
    assert summary["retries"].get("http-429", 0) + summary["retries"].get("http-500", 0) > 0 and summary["retries"]["parse-error"] > 0
    assert summary["requests"] == len(requests) and summary["completions"] == summary["tokens"]["prompt"] / 100
    assert summary["cost_usd"] == pytest.approx(summary["completions"] * (0.1 + 0.02))
    cached = sqlite3.connect(tmp_path / "out.cache.sqlite").execute("SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM answers").fetchone()
    assert cached == (12, summary["tokens"]["prompt"], summary["tokens"]["completion"])  # each record's tokens, parse retries included
    corrections = [r for r in requests if len(r["messages"]) == 3]
    assert corrections and "could not be used" in corrections[0]["messages"][2]["content"]

    align, instruct = samples[0], samples[1]
    assert align.task == "alignment-vqa" and instruct.task == "vqa" and align.source == "reformat:mllm"
    assert align.turns[0].text in prompts.SINGLE_IMAGE_QUESTIONS and align.targets["answer"] == GOOD_ANSWER["Image_description"]
    assert instruct.turns[0].text == GOOD_ANSWER["QA-query"] and instruct.turns[1].text == GOOD_ANSWER["QA-answer"]
    assert align.meta["scenario"] == draw("r0", 0, 1)[0] and align.meta["prompt_version"] == prompts.PROMPT_VERSION
    assert align.images[0].path == "img/0-0.png"
    first = next(r for r in requests if record_of(r) == "r0")["messages"][0]["content"]
    assert first[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert prompts.SCENARIO_PROMPTS[align.meta["scenario"]] in first[-1]["text"] and CONTEXT.format(i=0) in first[-1]["text"]
    assert json.loads((tmp_path / "out.summary.json").read_text()) == summary


def test_cache_and_resume_never_pay_twice(tmp_path):
    src = make_records(tmp_path, 4)
    with FakeOpenAI(lambda r: GOOD, model="m1") as server:
        first = reformat_file(src, tmp_path / "out.jsonl", config(server))
        resumed = reformat_file(src, tmp_path / "out.jsonl", config(server))  # the output is complete: nothing to do
        (tmp_path / "out.jsonl").unlink()
        cached = reformat_file(src, tmp_path / "out.jsonl", config(server))  # output lost, cache kept
        assert len(server.requests) == 4
    assert first["completions"] == 4 and resumed["resumed"] == 4 and resumed["requests"] == 0
    assert cached["cache_hits"] == 4 and cached["requests"] == 0 and cached["records_written"] == 4
    with FakeOpenAI(lambda r: GOOD, model="m2") as server:  # another model is another key
        other = reformat_file(src, tmp_path / "out-m2.jsonl", config(server, cache=tmp_path / "out.cache.sqlite"))
    assert other["cache_hits"] == 0 and other["completions"] == 4
    with pytest.raises(MedMLLMError, match="another run"), FakeOpenAI(lambda r: GOOD, model="m2") as server:
        reformat_file(src, tmp_path / "out.jsonl", config(server))


def test_server_dies_mid_run_then_resume(tmp_path):
    """After 5 answers the server only says 503: those records fail (counted); a re-run with a live
    server does only them, and the output ends with exactly one pair per input, no duplicate."""
    src = make_records(tmp_path, 10)
    answered = Counter()

    def dying(request):
        if sum(answered.values()) >= 5:
            raise HTTPError(503, "down")
        answered[record_of(request)] += 1
        return GOOD

    with FakeOpenAI(dying) as server:
        broken = reformat_file(src, tmp_path / "out.jsonl", config(server, max_attempts=2, concurrency=2))
    assert broken["records_written"] == 5 and broken["failed"] == {"http-503": 5} and broken["retries"]["http-503"] == 5
    rejected = [json.loads(x) for x in (tmp_path / "out.rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["http-503"] * 5
    done_first = set(by_record(tmp_path / "out.jsonl"))
    with FakeOpenAI(lambda r: GOOD) as server:
        fixed = reformat_file(src, tmp_path / "out.jsonl", config(server))
        again = Counter(record_of(r) for r in server.requests)
    assert fixed["resumed"] == 5 and fixed["failed"] == {} and fixed["records_written"] == 10
    assert not set(again) & done_first and sum(again.values()) == 5  # nothing paid twice
    groups = by_record(tmp_path / "out.jsonl")
    assert sorted(groups) == sorted(f"r{i}" for i in range(10)) and all(len(v) == 2 for v in groups.values())


def test_crash_leftovers_are_dropped_on_resume(tmp_path):
    """A half-written last record (the process killed mid-write) is redone, not kept."""
    src = make_records(tmp_path, 3)
    with FakeOpenAI(lambda r: GOOD) as server:
        reformat_file(src, tmp_path / "out.jsonl", config(server))
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        (tmp_path / "out.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])  # r1 has one sample and a cut line
        resumed = reformat_file(src, tmp_path / "out.jsonl", config(server, cache=tmp_path / "empty-cache.sqlite"))
        assert sorted(record_of(r) for r in server.requests[3:]) == ["r1", "r2"]
    assert resumed["resumed"] == 1 and (tmp_path / "out.jsonl").read_text().splitlines() == lines


def test_http_errors(tmp_path):
    src = make_records(tmp_path, 2)
    with FakeOpenAI(lambda r: (_ for _ in ()).throw(HTTPError(400, "image too large"))) as server:
        summary = reformat_file(src, tmp_path / "a.jsonl", config(server))
        assert summary["failed"] == {"http-400": 2} and summary["requests"] == 2  # a 400 is not retried
    with FakeOpenAI(lambda r: (_ for _ in ()).throw(HTTPError(401, "bad key"))) as server, \
            pytest.raises(MedMLLMError, match="HTTP 401 .the API key was refused"):
        reformat_file(src, tmp_path / "b.jsonl", config(server))
    with FakeOpenAI(lambda r: "no json here") as server:
        summary = reformat_file(src, tmp_path / "c.jsonl", config(server, parse_retries=1))
        assert summary["failed"] == {"parse-error": 2} and summary["completions"] == 4 and summary["records_written"] == 0


def test_timeouts_are_retried(tmp_path):
    src = make_records(tmp_path, 1)
    calls = []

    def slow_once(request):
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(0.6)
        return GOOD

    with FakeOpenAI(slow_once) as server:
        summary = reformat_file(src, tmp_path / "out.jsonl", config(server, timeout=0.2))
    # the fake's event loop sleeps too, so the first retry may time out as well
    assert set(summary["retries"]) == {"timeout"} and summary["retries"]["timeout"] >= 1 and summary["records_written"] == 1


def test_rate_limit_spaces_requests(tmp_path):
    src = make_records(tmp_path, 6)
    with FakeOpenAI(lambda r: GOOD) as server:
        times = []
        original = server.respond
        server.respond = lambda r: (times.append(time.monotonic()), original(r))[1]
        reformat_file(src, tmp_path / "out.jsonl", config(server, rate_limit=20, concurrency=6))
    assert len(times) == 6 and times[-1] - times[0] >= 5 / 20 * 0.9


@pytest.mark.parametrize("mode", ["llm", "distill", "native"])
def test_comparison_modes(tmp_path, mode):
    src = make_records(tmp_path, 2)
    caption = "Axial CT shows a hypodense liver lesion."
    with FakeOpenAI(lambda r: caption) as server:
        cfg = config(server, mode=mode) if mode != "native" else EngineConfig(mode="native")
        summary = reformat_file(src, tmp_path / "out" / "caps.jsonl", cfg)
        requests = list(server.requests)
    samples = list(read_samples(tmp_path / "out" / "caps.jsonl"))
    assert [s.id for s in samples] == ["r0/caption", "r1/caption"] and summary["samples_written"] == 2
    assert all(s.task == "caption" and s.turns[0].text == prompts.DESCRIPTION_QUERY and s.source == f"reformat:{mode}" for s in samples)
    assert samples[0].images[0].path == "../img/0-0.png"  # relative to the output's folder
    if mode == "native":
        assert requests == [] and samples[0].targets["answer"] == CONTEXT.format(i=0)
        return
    assert samples[0].targets["answer"] == caption and len(requests) == 2
    content = requests[0]["messages"][0]["content"]
    if mode == "llm":  # text only: Figure 19 with the context, no image
        assert {r["messages"][0]["content"] for r in requests} == {prompts.llm_prompt(CONTEXT.format(i=i)) for i in range(2)}
    else:  # images only: the query, no context
        assert content[0]["type"] == "image_url" and content[-1]["text"] == prompts.DESCRIPTION_QUERY
        assert "abscess" not in json.dumps(requests)


def test_bad_configuration_is_one_line(tmp_path):
    src = make_records(tmp_path, 1)
    with pytest.raises(MedMLLMError, match="--mode must be one of"):
        reformat_file(src, tmp_path / "o.jsonl", EngineConfig(mode="gpt"))
    with pytest.raises(MedMLLMError, match="give --endpoint URL and --model NAME"):
        reformat_file(src, tmp_path / "o.jsonl", EngineConfig(mode="mllm"))


def test_concurrency_limit(tmp_path, monkeypatch):
    from medmllm.reformat import engine

    src = make_records(tmp_path, 9)
    in_flight, peak = 0, []

    async def complete(self, messages):
        nonlocal in_flight
        in_flight += 1
        peak.append(in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return GOOD, (0, 0)

    monkeypatch.setattr(engine.ChatClient, "complete", complete)
    summary = reformat_file(src, tmp_path / "out.jsonl", EngineConfig(endpoint="http://127.0.0.1:9/v1", model="m", concurrency=3))
    assert summary["records_written"] == 9 and max(peak) == 3
