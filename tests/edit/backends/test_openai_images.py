"""backend=openai_images: the openai SDK's images.edit against a real server on loopback."""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import re

import pytest
from fakes.openai_server import encode, fake_edit
from PIL import Image

from imgedit_ds.edit.backends.openai_images import OpenAIImagesBackend
from imgedit_ds.edit.base import ConfigError, FatalBackendError

TRANSIENT = ["429", "500", "503", "hang", "malformed_json", "truncated_b64", "empty_image"]


def test_rows_get_their_own_edits_as_the_server_returned_them(server, openai_images, make_request, png_of, run_edit):
    requests = [make_request(i) for i in range(6)]
    server.script(requests[5].instruction, "url")  # a compatible server that links instead of embedding
    results = run_edit(openai_images(), requests)
    for req, result in zip(requests, results, strict=False):
        assert result.status == "ok", result.error
        assert result.data == png_of(req)
        assert result.params == {"image_format": "PNG"}
        assert server.requests[req.instruction] == 1


def test_every_source_and_every_option_is_sent(server, openai_images, make_request, make_source, run_edit):
    sources = [make_source(1, "PNG"), make_source(2, "JPEG"), make_source(3, "GIF")]
    req = make_request(0, sources)
    options = {
        "size": "1024x1024",
        "quality": "low",
        "input_fidelity": "high",
        "background": "opaque",
        "output_format": "webp",
    }
    [result] = run_edit(openai_images(model="gpt-image-1-mini", **options), [req])
    assert result.status == "ok", result.error
    [record] = server.records(req.instruction)
    assert record.model == "gpt-image-1-mini"
    assert {k: record.fields[k] for k in options} == options
    # PNG and JPEG go as they came; GIF, which the endpoint does not take, as PNG.
    assert record.image_digests[:2] == [hashlib.sha256(s.data).hexdigest() for s in sources[:2]]
    assert len(record.image_digests) == 3
    assert result.data == encode(fake_edit(req.instruction, sources[0].image), "webp")
    assert result.params == {"image_format": "WEBP"} and Image.open(io.BytesIO(result.data)).format == "WEBP"


@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_fault_is_retried_until_the_row_is_ok(server, openai_images, make_request, png_of, run_edit, fault):
    req = make_request(0)
    server.script(req.instruction, fault)
    [result] = run_edit(openai_images(timeout=0.5), [req])
    assert result.status == "ok", result.error
    assert result.data == png_of(req)
    assert server.requests[req.instruction] == 2 and result.usage["requests"] == 2


def test_moderation_block_is_refused_and_never_retried(server, openai_images, make_request, run_edit):
    req = make_request(0)
    server.script(req.instruction, "moderation", "ok")
    [result] = run_edit(openai_images(), [req])
    assert result.status == "refused" and "safety system" in result.error
    assert server.requests[req.instruction] == 1


def test_a_row_that_keeps_failing_fails_alone(server, openai_images, make_request, run_edit):
    bad, good = make_request(0), make_request(1)
    server.script(bad.instruction, "empty_image", "empty_image", "empty_image")
    results = run_edit(openai_images(max_retries=2), [bad, good])
    assert results[0].status == "failed" and results[0].error.startswith("invalid image: ")
    assert "gave up after 3 attempts" in results[0].error
    assert results[1].status == "ok"


def test_bad_key_and_unknown_model_stop_the_run(server, openai_images, make_request, run_edit, monkeypatch):
    with pytest.raises(FatalBackendError, match=re.escape("backend.model='dall-e-9' is unknown")):
        run_edit(openai_images(model="dall-e-9"), [make_request(0)])
    monkeypatch.setenv("IMGEDIT_TEST_API_KEY", "sk-not-this-one")
    with pytest.raises(FatalBackendError, match="rejected the API key") as err:
        run_edit(openai_images(), [make_request(1)])
    assert "sk-not-this-one" not in str(err.value)


def test_usage_and_cost_per_row(server, openai_images, make_request, run_edit):
    prices = {"usd_per_1m_input": 10.0, "usd_per_1m_output": 40.0}
    [result] = run_edit(openai_images(prices=prices), [make_request(0)])
    assert result.usage == {
        "input_tokens": 85,
        "output_tokens": 272,
        "total_tokens": 357,
        "cost_usd": pytest.approx(85 * 10e-6 + 272 * 40e-6),
        "requests": 1,
    }


def test_check_and_params(monkeypatch, caplog, server, openai_images, make_request, run_edit, api_key):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIImagesBackend().check()
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with pytest.raises(ConfigError, match=r"backend[.]output_format"):
        OpenAIImagesBackend(output_format="tiff").check()
    assert OpenAIImagesBackend(quality="high").params() == {
        "model": "gpt-image-1",
        "base_url": "https://api.openai.com/v1",
        "quality": "high",
    }
    caplog.set_level(logging.DEBUG)
    backend = openai_images()
    run_edit(backend, [make_request(0)])
    for text in (caplog.text, repr(backend), str(backend.params())):
        assert api_key not in text
    assert api_key.encode() not in pickle.dumps(backend)
