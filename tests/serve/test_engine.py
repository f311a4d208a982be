"""The generation engine: batching equals one-by-one, the features hook, queue limits, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from medmllm.serve.engine import (
    IMAGE_PLACEHOLDER,
    EngineConfig,
    GenerationEngine,
    ImageInput,
    Prompt,
    QueueFullError,
    RequestCancelledError,
    RequestTimeoutError,
    SamplingParams,
    encode_pixels,
)
from tests.serve.conftest import MODEL_ID
from tests.serve.test_api import auth

GREEDY = SamplingParams(max_tokens=10, temperature=0)


@pytest.fixture(scope="module")
def tiny():
    from medmllm.model.factory import build

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, processor = build("tiny", max_exams=3)
    return model.eval(), processor


def text_prompt(text: str) -> Prompt:
    return Prompt([{"role": "user", "content": text}])


def image_prompt(processor, seed: int, text: str = "Please caption this scan with findings.") -> Prompt:
    pixels = processor.image_tensor(np.random.default_rng(seed).random((6, 40, 40)).astype(np.float32))
    parts = [{"type": "image", "image": IMAGE_PLACEHOLDER, "modality": "CT", "exam_index": 1}, {"type": "text", "text": text}]
    return Prompt([{"role": "user", "content": parts}], [ImageInput(pixels=pixels)])


def run_engine(tiny, config: EngineConfig, body):
    """Start an engine on ``tiny``, run ``await body(engine)`` in a fresh loop, stop the engine."""
    engine = GenerationEngine(*tiny, config)
    engine.start()
    try:
        return asyncio.run(body(engine))
    finally:
        engine.stop()


def test_image_features_hook_equals_pixel_values(tiny):
    model, processor = tiny
    scan = np.random.default_rng(3).random((6, 40, 40)).astype(np.float32)
    batch = processor([[{"role": "user", "content": [{"type": "image", "image": scan, "exam_index": 2}, {"type": "text", "text": "Findings?"}]}]],
                      add_generation_prompt=True)
    with torch.inference_mode():
        from_pixels = model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=processor.pad_token_id)
        features = encode_pixels(model, [processor.image_tensor(scan)])
        kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "image_mask", "image_exam_index")}
        from_features = model.generate(**kwargs, image_features=features, max_new_tokens=6, do_sample=False, pad_token_id=processor.pad_token_id)
        torch.testing.assert_close(model.embed(batch["input_ids"], image_features=features, image_mask=batch["image_mask"],
                                               image_exam_index=batch["image_exam_index"]),
                                   model.embed(batch["input_ids"], batch["pixel_values"], batch["image_mask"], batch["image_sizes"],
                                               batch["image_exam_index"]))
    torch.testing.assert_close(from_pixels, from_features)
    # The exam embedding is added by the hook: without the exam index the tokens differ.
    assert not torch.allclose(model.embed(batch["input_ids"], image_features=features),
                              model.embed(batch["input_ids"], image_features=features, image_mask=batch["image_mask"],
                                          image_exam_index=batch["image_exam_index"]))


def test_a_batch_answers_exactly_as_one_request_at_a_time(tiny):
    _, processor = tiny
    prompts = [text_prompt("The lungs are clear."), image_prompt(processor, 0), text_prompt("Effusion?"), image_prompt(processor, 1, "Nodule?")]
    tokens = [3, 10, 7, 10]

    async def all_at_once(engine):
        handles = [engine.submit(p, SamplingParams(max_tokens=m, temperature=0)) for p, m in zip(prompts, tokens)]
        return await asyncio.gather(*(h.result() for h in handles)), engine.stats()

    async def one_by_one(engine):
        return [await engine.submit(p, SamplingParams(max_tokens=m, temperature=0)).result() for p, m in zip(prompts, tokens)]

    batched, stats = run_engine(tiny, EngineConfig(max_batch_size=4, batch_wait_ms=200), all_at_once)
    alone = run_engine(tiny, EngineConfig(max_batch_size=1), one_by_one)
    assert stats["max_batch_size_seen"] == 4 and stats["batches"] == 1
    assert batched == alone
    assert [c.completion_tokens <= m for c, m in zip(batched, tokens)] == [True] * 4
    assert batched[1].prompt_tokens > batched[0].prompt_tokens


def test_sampling_settings_are_batched_apart(tiny):
    async def body(engine):
        handles = [engine.submit(text_prompt("x"), SamplingParams(max_tokens=2, temperature=t)) for t in (0, 0.7, 0, 0.7, 1.0)]
        await asyncio.gather(*(h.result() for h in handles))
        return engine.stats()

    stats = run_engine(tiny, EngineConfig(max_batch_size=8, batch_wait_ms=200), body)
    assert stats["batch_sizes"] == {"1": 1, "2": 2} and stats["completed"] == 5


@pytest.mark.parametrize("refill_wait_ms, sizes", [(0, {"4": 1, "1": 1, "3": 1}), (2000, {"4": 2})])
def test_after_a_batch_of_n_the_next_waits_to_refill_n(tiny, refill_wait_ms, sizes):
    """Clients of a batch come back one by one; with refill_wait_ms the early one does not leave alone."""

    async def body(engine):
        first = [engine.submit(text_prompt(f"Finding {k}?"), GREEDY) for k in range(4)]
        await asyncio.gather(*(h.result() for h in first))
        early = engine.submit(text_prompt("Effusion?"), GREEDY)
        await asyncio.sleep(0.3)  # far longer than batch_wait_ms
        late = [engine.submit(text_prompt(f"Nodule {k}?"), GREEDY) for k in range(3)]
        await asyncio.gather(early.result(), *(h.result() for h in late))
        return engine.stats()

    stats = run_engine(tiny, EngineConfig(max_batch_size=4, batch_wait_ms=100, refill_wait_ms=refill_wait_ms), body)
    assert stats["batch_sizes"] == dict(sorted(sizes.items())) and stats["completed"] == 8


def blocked_engine_body(check):
    """Run ``check(engine)`` while the worker is held busy by a call that waits on an event."""

    async def body(engine):
        release = threading.Event()
        busy = asyncio.ensure_future(engine.call(lambda: release.wait(30)))
        await asyncio.sleep(0.05)
        try:
            return await check(engine, release)
        finally:
            release.set()
            await busy

    return body


def test_full_queue_is_refused_and_queued_requests_time_out_or_cancel(tiny):
    async def check(engine, release):
        waiting = engine.submit(text_prompt("a"), GREEDY, timeout_s=0.05)
        cancelled = engine.submit(text_prompt("b"), GREEDY)
        with pytest.raises(QueueFullError):
            engine.submit(text_prompt("c"), GREEDY)
        cancelled.cancel()
        await asyncio.sleep(0.1)
        release.set()
        with pytest.raises(RequestTimeoutError):
            await waiting.result()
        with pytest.raises(RequestCancelledError):
            await cancelled.result()
        return engine.stats()

    stats = run_engine(tiny, EngineConfig(max_queue=2), blocked_engine_body(check))
    assert stats["rejected_queue_full"] == 1 and stats["timed_out"] == 1 and stats["cancelled"] == 1 and stats["batches"] == 0


def test_cancelling_a_running_request_stops_its_row(tiny):
    async def body(engine):
        handle = engine.submit(text_prompt("Describe"), SamplingParams(max_tokens=2000, temperature=0))
        other = engine.submit(text_prompt("Describe"), SamplingParams(max_tokens=5, temperature=0))
        events = handle.events()
        await events.__anext__()  # the first text: the row is generating
        handle.cancel()
        with pytest.raises(RequestCancelledError):
            async for _ in events:
                pass
        assert (await other.result()).completion_tokens <= 5
        await asyncio.sleep(0.2)
        return engine.stats()

    stats = run_engine(tiny, EngineConfig(max_batch_size=4, batch_wait_ms=100), body)
    assert stats["cancelled"] == 1 and stats["generated_tokens"] < 500


def test_sixteen_concurrent_clients_are_all_answered_in_batches(served, client):
    before = httpx.get(f"{served.base_url}/v1/engine/stats", headers=auth(served)).json()

    def ask(k: int):
        reply = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": f"Finding number {k}?"}],
                                               max_tokens=6, temperature=0)
        return reply.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    after = httpx.get(f"{served.base_url}/v1/engine/stats", headers=auth(served)).json()
    assert len(answers) == 16 and all(isinstance(a, str) for a in answers)
    assert after["completed"] - before["completed"] == 16
    assert after["batches"] - before["batches"] < 16  # some requests shared a generate call
    assert after["max_batch_size_seen"] >= 2


def stats_after_a_cancel(served, before: dict) -> dict:
    """The engine's counters once it has counted one more cancellation than ``before`` (or after 5 s)."""
    for _ in range(100):
        after = httpx.get(f"{served.base_url}/v1/engine/stats", headers=auth(served)).json()
        if after["cancelled"] > before["cancelled"]:
            break
        time.sleep(0.05)
    return after


def test_a_client_that_disconnects_mid_stream_is_cancelled(served):
    before = httpx.get(f"{served.base_url}/v1/engine/stats", headers=auth(served)).json()
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Describe"}], "max_tokens": 2000, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{served.base_url}/v1/chat/completions", json=body, headers=auth(served), timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # one real token arrived: hang up
    after = stats_after_a_cancel(served, before)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] < 2000


def test_a_client_that_gives_up_waiting_is_cancelled(served):
    before = httpx.get(f"{served.base_url}/v1/engine/stats", headers=auth(served)).json()
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Describe"}], "max_tokens": 2000, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{served.base_url}/v1/chat/completions", json=body, headers=auth(served), timeout=httpx.Timeout(5, read=0.3))
    after = stats_after_a_cancel(served, before)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] < 2000
