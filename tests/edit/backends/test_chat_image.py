"""backend=chat_image against a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import pickle
import re
import time

import pytest

from imgedit_ds.edit.base import ConfigError, FatalBackendError

SHAPES = ["ok", "content_part", "markdown_data_url", "bare_data_url", "markdown_http_url", "bare_http_url"]
TRANSIENT = ["429", "500", "503", "hang", "malformed_json", "truncated_b64", "empty_image"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_every_reply_shape_gives_each_row_its_own_image_as_returned(
    server, chat_image, make_request, png_of, run_edit, stream
):
    requests = [make_request(i) for i in range(len(SHAPES))]
    for req, shape in zip(requests, SHAPES, strict=False):
        server.script(req.instruction, shape)
    results = run_edit(chat_image(stream=stream), requests)
    for req, shape, result in zip(requests, SHAPES, results, strict=False):
        assert (result.status, result.error) == ("ok", ""), shape
        assert result.data == png_of(req), f"{shape}: not the bytes the server made for {req.id}"
        assert result.params == {"image_format": "PNG"}
        assert server.requests[req.instruction] == 1


def test_request_sends_instruction_every_source_as_it_came_and_options(
    server, chat_image, make_request, make_source, run_edit
):
    sources = [make_source(1, "PNG"), make_source(2, "JPEG"), make_source(3, "WEBP")]
    req = make_request(7, sources)
    backend = chat_image(image_config={"aspect_ratio": "1:1"}, extra_body={"provider": {"sort": "price"}})
    [result] = run_edit(backend, [req])
    assert result.status == "ok"
    [record] = server.records(req.instruction)
    assert record.image_digests == [hashlib.sha256(s.data).hexdigest() for s in sources]
    assert record.fields["modalities"] == ["image", "text"]
    assert record.fields["image_config"] == {"aspect_ratio": "1:1"}
    assert record.fields["provider"] == {"sort": "price"}
    assert record.fields["seed"] == req.seed
    assert record.model == "gemini-2.5-flash-image"


def test_sources_without_their_bytes_are_sent_as_png(server, chat_image, make_request, make_source, run_edit):
    src = make_source(4)
    src.data = b""  # what the reader hands over when it had to normalize the image
    [result] = run_edit(chat_image(), [make_request(4, [src])])
    assert result.status == "ok"
    assert len(server.log[0].image_digests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_reply_without_image_is_refused_with_the_models_words_and_not_retried(
    server, chat_image, make_request, run_edit, stream
):
    req = make_request(0)
    server.script(req.instruction, "refusal", "ok")
    [result] = run_edit(chat_image(stream=stream), [req])
    assert result.status == "refused"
    assert "IMAGE_SAFETY" in result.error and "can't help with editing" in result.error
    assert result.data is None
    assert server.requests[req.instruction] == 1
    assert result.usage["requests"] == 1 and result.usage["input_tokens"] == 300


def test_moderation_block_is_refused_and_not_retried(server, chat_image, make_request, run_edit):
    req, other = make_request(0), make_request(1)
    server.script(req.instruction, "moderation", "ok")
    results = run_edit(chat_image(), [req, other])
    assert results[0].status == "refused" and results[0].error.startswith("moderation_blocked:")
    assert results[1].status == "ok"
    assert server.requests[req.instruction] == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_fault_is_retried_until_the_row_is_ok(
    server, chat_image, make_request, png_of, run_edit, fault, stream
):
    req = make_request(3)
    server.script(req.instruction, fault)
    [result] = run_edit(chat_image(stream=stream, timeout=0.5), [req])
    assert result.status == "ok", result.error
    assert result.data == png_of(req)
    assert server.requests[req.instruction] == 2
    assert result.usage["requests"] == 2


def test_retry_after_is_honoured(server, chat_image, make_request, run_edit):
    server.retry_after = "0.4"
    req = make_request(0)
    server.script(req.instruction, "429")
    started = time.monotonic()
    [result] = run_edit(chat_image(), [req])
    assert result.status == "ok"
    assert time.monotonic() - started >= 0.4


def test_fault_past_max_retries_fails_only_that_row(server, chat_image, make_request, run_edit):
    bad, good = make_request(0), make_request(1)
    server.script(bad.instruction, "500", "truncated_b64", "503")
    results = run_edit(chat_image(max_retries=2), [bad, good])
    assert results[0].status == "failed"
    assert results[0].error.startswith("HTTP 503: ") and "gave up after 3 attempts" in results[0].error
    assert results[1].status == "ok"
    assert server.requests[bad.instruction] == 3
    # The truncated image was billed, so its tokens count.
    assert results[0].usage["requests"] == 3 and results[0].usage["output_tokens"] == 1302


def test_bad_key_stops_the_run_at_once_without_the_key_in_the_message(
    server, chat_image, make_request, run_edit, monkeypatch
):
    monkeypatch.setenv("IMGEDIT_TEST_API_KEY", "sk-wrong-key-4242")
    backend = chat_image(concurrency=2)
    with pytest.raises(FatalBackendError, match=r"rejected the API key in \$IMGEDIT_TEST_API_KEY") as err:
        run_edit(backend, [make_request(i) for i in range(20)])
    assert "sk-wrong-key-4242" not in str(err.value)
    assert sum(server.requests.values()) <= 2  # the window's first requests, nothing after
    with pytest.raises(FatalBackendError):  # and later rows are not even sent
        run_edit(backend, [make_request(99)])
    assert server.requests[make_request(99).instruction] == 0


@pytest.mark.parametrize("status", [404, 400], ids=["openai-404", "openrouter-400"])
def test_unknown_model_stops_the_run(server, chat_image, make_request, run_edit, status):
    server.unknown_model_status = status
    with pytest.raises(FatalBackendError, match=r"backend.model='gemini-9-ultra' is unknown"):
        run_edit(chat_image(model="gemini-9-ultra", concurrency=1), [make_request(i) for i in range(5)])
    assert sum(server.requests.values()) == 1


def test_base_url_without_v1_stops_the_run(server, chat_image, make_request, run_edit):
    with pytest.raises(FatalBackendError, match="HTTP 404"):
        run_edit(chat_image(base_url=server.root_url), [make_request(0)])


def test_base_url_that_is_a_web_page_stops_the_run(server, chat_image, make_request, run_edit):
    req = make_request(0)
    server.script(req.instruction, "html")
    with pytest.raises(FatalBackendError, match="not as an OpenAI-compatible API"):
        run_edit(chat_image(), [req])


def test_unreachable_base_url_stops_the_run(chat_image, make_request, run_edit):
    with pytest.raises(FatalBackendError, match=re.escape("cannot connect to backend.base_url=http://127.0.0.1:9/v1")):
        run_edit(chat_image(base_url="http://127.0.0.1:9/v1"), [make_request(0)])


def test_html_after_the_server_has_answered_is_only_a_failed_attempt(server, chat_image, make_request, run_edit):
    first, second = make_request(0), make_request(1)
    backend = chat_image(concurrency=1)
    run_edit(backend, [first])
    server.script(second.instruction, "html")
    [result] = run_edit(backend, [second])
    assert result.status == "ok" and server.requests[second.instruction] == 2


def test_links_to_other_schemes_are_never_read(server, chat_image, make_request, run_edit):
    req = make_request(0)
    server.script(req.instruction, "file_url", "file_url", "file_url")
    [result] = run_edit(chat_image(), [req])
    assert result.status == "failed" and "only http(s) URLs are read" in result.error


def test_downloads_over_the_size_limit_fail(server, chat_image, make_request, run_edit):
    req = make_request(0)
    server.script(req.instruction, "bare_http_url", "bare_http_url", "bare_http_url")
    [result] = run_edit(chat_image(max_download_mb=50 / 2**20), [req])
    assert result.status == "failed" and "over backend.max_download_mb" in result.error


def test_cost_from_configured_prices_when_the_server_reports_none(server, chat_image, make_request, run_edit):
    server.report_cost = False
    prices = {"usd_per_1m_input": 0.3, "usd_per_1m_output": 30.0}
    [result] = run_edit(chat_image(prices=prices), [make_request(0)])
    assert result.usage["output_tokens"] == 1302
    assert result.usage["cost_usd"] == pytest.approx(300 * 0.3e-6 + 1302 * 30e-6)


def test_concurrency_is_a_sliding_window_across_batches(server, chat_image, make_request):
    """Batches run together (as datasets.map runs them): a slow row holds one slot, not a batch."""
    slow = {f"tint row {b * 4}" for b in range(3)}  # one slow row in each batch of 4
    server.latency = lambda instruction: 0.4 if instruction in slow else 0.05
    backend = chat_image(concurrency=4)
    batches = [[make_request(b * 4 + i) for i in range(4)] for b in range(3)]

    async def run_all():
        return await asyncio.gather(*(backend.aedit_batch(batch) for batch in batches))

    started = time.monotonic()
    results = asyncio.run(run_all())
    elapsed = time.monotonic() - started
    assert all(r.status == "ok" for batch in results for r in batch)
    assert server.max_in_flight == 4
    # The slow rows overlap (about 0.5 s in all); batch by batch they would take 3 x 0.4 s = 1.2 s.
    assert elapsed < 0.9


def test_requests_per_minute_spaces_request_starts(server, chat_image, make_request, run_edit):
    started = time.monotonic()
    results = run_edit(chat_image(requests_per_minute=600), [make_request(i) for i in range(5)])
    assert all(r.status == "ok" for r in results)
    assert time.monotonic() - started >= 0.4  # starts 0.1 s apart


def test_backend_survives_a_fresh_event_loop_per_call(server, chat_image, make_request, run_edit):
    backend = chat_image(concurrency=2)
    for call in range(3):  # datasets.map runs each call on a loop of its own
        results = run_edit(backend, [make_request(call * 3 + i) for i in range(3)])
        assert [r.status for r in results] == ["ok"] * 3


def test_check_names_what_to_set(monkeypatch):
    from imgedit_ds.edit.backends.chat_image import ChatImageBackend

    monkeypatch.delenv("DF_API_KEY", raising=False)
    backend = ChatImageBackend(model="m", base_url="https://relay.example/v1", api_key_env="DF_API_KEY")
    with pytest.raises(ConfigError, match="DF_API_KEY"):
        backend.check()
    monkeypatch.setenv("DF_API_KEY", "x")
    with pytest.raises(ConfigError, match=r"backend[.]model"):
        ChatImageBackend(base_url="https://relay.example/v1", api_key_env="DF_API_KEY").check()
    with pytest.raises(ConfigError, match=r"backend[.]base_url"):
        ChatImageBackend(model="m", api_key_env="DF_API_KEY").check()
    with pytest.raises(ConfigError, match=r"backend[.]concurrency"):
        ChatImageBackend(model="m", base_url="https://r/v1", api_key_env="DF_API_KEY", concurrency=0).check()
    with pytest.raises(ConfigError, match=r"backend[.]prices"):
        ChatImageBackend(model="m", base_url="https://r/v1", api_key_env="DF_API_KEY", prices={"out": 1}).check()


def test_the_key_appears_nowhere(server, chat_image, make_request, run_edit, api_key, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    steps = ["ok", "refusal", "moderation", "500", "malformed_json", "hang", "bare_http_url"]
    requests = [make_request(i) for i in range(len(steps))]
    for req, step in zip(requests, steps, strict=False):
        server.script(req.instruction, step, step, step)
    backend = chat_image(timeout=0.3, max_retries=1)
    results = run_edit(backend, requests)
    assert {r.status for r in results} == {"ok", "refused", "failed"}
    seen = [caplog.text, *capsys.readouterr(), repr(backend), str(backend.params()), pickle.dumps(backend)]
    seen += [repr(r) for r in results]
    assert not [s for s in seen if (api_key.encode() if isinstance(s, bytes) else api_key) in s]
