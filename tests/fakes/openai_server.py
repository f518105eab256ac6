"""A fake OpenAI-compatible image-editing server on loopback, for tests and scripts/bench_api.py.

It speaks the two endpoints the HTTP backends call, on their real wire formats:
- POST /v1/images/edits: multipart form (what the openai SDK sends), JSON reply with b64_json;
- POST /v1/chat/completions: JSON, or SSE when the body says "stream": true;
and serves GET /files/<name> for replies that link to an image instead of embedding it.

Edits are deterministic: `fake_edit(instruction, image)` tints the first source image with a
colour taken from a hash of the instruction, so a test can tell which image belongs to which row.
Requests are counted per instruction (`server.requests`), so tests give each row its own
instruction. What a request gets is scripted per instruction with `server.script(instruction,
*steps)`; each request takes the next step, then `server.default_step`. A step is a fault or a
reply shape (see FAULTS and SHAPES).

Run it alone (for the benchmark): python tests/fakes/openai_server.py --latency-median 0.2
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import hashlib
import io
import json
import math
import random
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image
from typing_extensions import Self

DEFAULT_KEY = "sk-fake-0123456789-secret"
MODELS = ("gpt-image-1", "gpt-image-1-mini", "gemini-2.5-flash-image", "google/gemini-2.5-flash-image")
IMAGE_TOKENS = 1290  # what Gemini 2.5 Flash Image bills per output image

# Faults: what goes wrong with a request.
FAULTS = (
    "429",  # rate limited, with Retry-After: server.retry_after
    "500",
    "503",
    "hang",  # no reply until server.hang_s has passed (longer than the client's timeout)
    "malformed_json",  # 200 with a body that is not JSON
    "truncated_b64",  # the image's bytes cut in half
    "empty_image",  # an image of zero bytes
    "refusal",  # text only, finish reason IMAGE_SAFETY
    "moderation",  # 400 with code moderation_blocked
    "401",
    "html",  # 200 text/html: a web page, not an API
)
# Shapes of a good reply (chat endpoint; the images endpoint knows "ok" and "url").
SHAPES = (
    "ok",  # message.images[].image_url.url (OpenRouter's shape)
    "content_part",  # an image_url part in message.content
    "markdown_data_url",  # ![image](data:image/png;base64,...) in the text
    "bare_data_url",  # data:image/png;base64,... in the text
    "markdown_http_url",  # ![image](http://127.0.0.1:port/files/...) in the text
    "bare_http_url",  # http://127.0.0.1:port/files/... in the text
    "url",  # images endpoint: data[0].url
    "file_url",  # message.images[] names a file:// URL, which a client must not read
)


def tint_color(instruction: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(instruction.encode()).digest()
    return digest[0], digest[1], digest[2]


def fake_edit(instruction: str, image: Image.Image) -> Image.Image:
    """The server's edit: the first source image, half blended with the instruction's colour."""
    rgb = image.convert("RGB")
    return Image.blend(rgb, Image.new("RGB", rgb.size, tint_color(instruction)), 0.5)


def encode(image: Image.Image, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format={"jpg": "JPEG"}.get(fmt, fmt.upper()))
    return buf.getvalue()


@dataclass
class RequestRecord:
    """What the server saw of one edit request (never the key itself)."""

    endpoint: str
    instruction: str
    model: str
    image_digests: list[str]  # sha256 of each source image as received
    fields: dict[str, Any]
    authorized: bool


@dataclass(repr=False)  # its log can be long; assertion messages show the fields they compare
class FakeOpenAIServer:
    """The server; use as a context manager or call start() and stop()."""

    api_key: str = DEFAULT_KEY
    models: tuple[str, ...] = MODELS
    latency: Callable[[str], float] | None = None
    retry_after: str = "0"
    hang_s: float = 30.0
    report_cost: bool = True
    unknown_model_status: int = 404  # OpenRouter answers 400 "... is not a valid model ID"
    default_step: str = "ok"
    requests: Counter = field(default_factory=Counter)
    log: list[RequestRecord] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._in_flight = 0

    def script(self, instruction: str, *steps: str) -> None:
        unknown = [s for s in steps if s not in FAULTS + SHAPES]
        if unknown:
            raise ValueError(f"unknown steps {unknown}; use one of {FAULTS + SHAPES}")
        self._scripts[instruction].extend(steps)

    def start(self, port: int = 0) -> FakeOpenAIServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", port), handler)
        # A short poll interval lets stop() return at once instead of after half a second.
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True, name="fake-openai").start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def records(self, instruction: str) -> list[RequestRecord]:
        return [r for r in self.log if r.instruction == instruction]

    def _next_step(self, instruction: str) -> str:
        with self._lock:
            self.requests[instruction] += 1
            queue = self._scripts.get(instruction)
            return queue.popleft() if queue else self.default_step

    def _track(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _publish(self, data: bytes) -> str:
        name = hashlib.sha256(data).hexdigest()[:16] + ".png"
        with self._lock:
            self._files[name] = data
        return f"{self.root_url}/files/{name}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default of 5 drops connections when 32 clients open at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up (timeouts, a stopped run) reset their connections; that is expected


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would hold the second

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _wait_for_latency(self) -> None:
        """A reply leaves `latency` after its request came in, however long making it took."""
        time.sleep(max(0.0, self._reply_at - time.monotonic()))

    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None):
        self._wait_for_latency()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _error(self, status: int, message: str, code: str | None, headers: dict | None = None) -> None:
        err = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        self._json(status, {"error": err}, headers)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    # -- routes -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._reply_at = time.monotonic()  # downloads answer at once
        name = self.path.removeprefix("/files/")
        data = self.fake._files.get(name)
        if not self.path.startswith("/files/") or data is None:
            self._send(404, b"<html>not found</html>", "text/html")
            return
        self._send(200, data, "image/png")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._received = self._reply_at = time.monotonic()
        self.fake._track(+1)
        try:
            if self.path == "/v1/images/edits":
                self._images_edit(body)
            elif self.path == "/v1/chat/completions":
                self._chat(body)
            else:
                self._send(404, b"<html><body>404 Not Found</body></html>", "text/html")
        finally:
            self.fake._track(-1)

    def _admit(self, record: RequestRecord) -> str | None:
        """Count the request and return its step, or None once it has been answered here."""
        fake = self.fake
        with fake._lock:
            fake.log.append(record)
        step = fake._next_step(record.instruction)
        if fake.latency is not None:
            self._reply_at = self._received + fake.latency(record.instruction)
        if not record.authorized or step == "401":
            self._error(401, "Incorrect API key provided.", "invalid_api_key")
        elif record.model not in fake.models and fake.unknown_model_status == 400:
            self._error(400, f"{record.model} is not a valid model ID", None)
        elif record.model not in fake.models:
            self._error(404, f"The model `{record.model}` does not exist.", "model_not_found")
        elif step == "hang":
            fake._stopping.wait(fake.hang_s)
            self._error(504, "gave up", None)
        elif step == "429":
            self._error(429, "Rate limit reached.", "rate_limit_exceeded", {"Retry-After": fake.retry_after})
        elif step in ("500", "503"):
            self._error(int(step), "The server had an error.", None)
        elif step == "moderation":
            self._error(400, "Your request was rejected by the safety system.", "moderation_blocked")
        elif step == "html":
            self._send(200, b"<!doctype html><html><body>Welcome</body></html>", "text/html")
        elif step == "malformed_json":
            self._send(200, b'{"choices": [{"message": {"content": "oops"', "application/json")
        else:
            return step
        return None

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.fake.api_key}"

    def _edited_bytes(self, step: str, instruction: str, first_image: bytes, fmt: str = "png") -> bytes:
        if step == "empty_image":
            return b""
        data = encode(fake_edit(instruction, Image.open(io.BytesIO(first_image))), fmt)
        return data[: len(data) // 2] if step == "truncated_b64" else data

    # -- POST /v1/images/edits --------------------------------------------------------------
    def _images_edit(self, body: bytes) -> None:
        header = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
        fields: dict[str, Any] = {}
        images: list[bytes] = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if name.startswith("image"):
                images.append(payload)
            else:
                fields[name] = payload.decode()
        instruction = fields.pop("prompt", "")
        record = RequestRecord(
            "images", instruction, fields.get("model", ""), _digests(images), fields, self._authorized()
        )
        step = self._admit(record)
        if step is None:
            return
        fmt = fields.get("output_format", "png")
        data = self._edited_bytes(step, instruction, images[0], fmt)
        item = {"url": self.fake._publish(data)} if step == "url" else {"b64_json": base64.b64encode(data).decode()}
        usage = {
            "input_tokens": 20 + 65 * len(images),
            "output_tokens": 272,
            "total_tokens": 292 + 65 * len(images),
            "input_tokens_details": {"text_tokens": 20, "image_tokens": 65 * len(images)},
        }
        self._json(200, {"created": int(time.time()), "data": [item], "output_format": fmt, "usage": usage})

    # -- POST /v1/chat/completions ----------------------------------------------------------
    def _chat(self, body: bytes) -> None:
        try:
            request = json.loads(body)
            content = request["messages"][-1]["content"]
        except (ValueError, KeyError, IndexError):
            self._error(400, "Could not parse the request body.", None)
            return
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        instruction = " ".join(p["text"] for p in parts if p.get("type") == "text")
        urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
        images = [base64.b64decode(url.split(",", 1)[1]) for url in urls]
        fields = {k: v for k, v in request.items() if k != "messages"}
        record = RequestRecord(
            "chat", instruction, request.get("model", ""), _digests(images), fields, self._authorized()
        )
        step = self._admit(record)
        if step is None:
            return
        if step == "refusal":
            message = {"role": "assistant", "content": "I can't help with editing this image."}
            reply = _completion(message, "stop", "IMAGE_SAFETY", self._usage(0))
        else:
            data = self._edited_bytes(step, instruction, images[0])
            reply = _completion(self._image_message(step, data), "stop", "STOP", self._usage(1))
        if request.get("stream"):
            self._stream(reply)
        else:
            self._json(200, reply)

    def _usage(self, n_images: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": 300, "completion_tokens": 12 + IMAGE_TOKENS * n_images}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if self.fake.report_cost:
            usage["cost"] = round(300 * 0.3e-6 + usage["completion_tokens"] * 30e-6, 8)
        return usage

    def _image_message(self, shape: str, data: bytes) -> dict[str, Any]:
        data_url = "data:image/png;base64," + base64.b64encode(data).decode()
        text = "Here is the edited image."
        if shape == "content_part":
            return {
                "role": "assistant",
                "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data_url}}],
            }
        if shape in ("markdown_data_url", "bare_data_url", "markdown_http_url", "bare_http_url"):
            url = self.fake._publish(data) if "http" in shape else data_url
            link = f"![edited image]({url})" if shape.startswith("markdown") else url
            return {"role": "assistant", "content": f"{text}\n\n{link}\n"}
        if shape == "file_url":
            data_url = "file:///etc/passwd"
        image = {"type": "image_url", "image_url": {"url": data_url}, "index": 0}
        return {"role": "assistant", "content": text, "images": [image]}

    def _stream(self, reply: dict[str, Any]) -> None:
        """Send the reply as SSE deltas: the text in small pieces, images in a middle chunk."""
        self._wait_for_latency()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        choice = reply["choices"][0]
        message = choice["message"]
        content = message.get("content") or ""
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if isinstance(content, list):  # content parts go out as they are
            deltas.append({"content": content})
        else:
            step = max(1, math.ceil(len(content) / 4))
            deltas += [{"content": content[i : i + step]} for i in range(0, len(content), step)]
        if message.get("images"):
            deltas.insert(2, {"images": message["images"]})
        for delta in deltas:
            chunk = {**_chunk_base(reply), "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self._chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        last_choice = {
            "index": 0,
            "delta": {},
            "finish_reason": choice["finish_reason"],
            "native_finish_reason": choice["native_finish_reason"],
        }
        last = {**_chunk_base(reply), "choices": [last_choice], "usage": reply["usage"]}
        self._chunk(b"data: " + json.dumps(last).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")


def _digests(images: list[bytes]) -> list[str]:
    return [hashlib.sha256(data).hexdigest() for data in images]


def _completion(message: dict, finish: str, native_finish: str, usage: dict) -> dict[str, Any]:
    choice = {"index": 0, "message": message, "finish_reason": finish, "native_finish_reason": native_finish}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake",
        "choices": [choice],
        "usage": usage,
    }


def _chunk_base(reply: dict[str, Any]) -> dict[str, Any]:
    return {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"], "model": "fake"}


def lognormal_latency(median_s: float, sigma: float, seed: int = 0) -> Callable[[str], float]:
    """A latency per instruction, drawn from a lognormal; the same instruction always waits as long."""

    def latency(instruction: str) -> float:
        rng = random.Random(f"{seed}:{instruction}")
        return median_s * math.exp(sigma * rng.gauss(0.0, 1.0))

    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-median", type=float, default=0.0, help="seconds; 0 answers at once")
    parser.add_argument("--latency-sigma", type=float, default=0.5)
    args = parser.parse_args()
    latency = lognormal_latency(args.latency_median, args.latency_sigma) if args.latency_median > 0 else None
    server = FakeOpenAIServer(latency=latency)
    server.start(args.port)
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
