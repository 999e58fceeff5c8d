"""The HTTP server: ``POST /v1/infer``, ``GET /healthz`` and the web page at ``/``.

One process holds one loaded model. Model calls run one at a time on a single worker thread
(:class:`ModelService`), so the event loop stays free for health checks and uploads while the
model works; checking an upload (instruction, image bytes, size) happens before the queue, so a
bad request is answered at once with HTTP 400 and the one-line :class:`InputError` message.
"""
import asyncio
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import List, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from visionllm.apis.inferencer import VisionLLMResult, check_request
from visionllm.apis.inputs import InputError, load_image
from visionllm.apis.understanding import check_instruction
from visionllm.instructions import REGION_PLACEHOLDER

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_SCORE_THRESHOLD = 0.3
INFER_PATH = "/v1/infer"
logger = logging.getLogger("visionllm.server")


def result_to_dict(result: VisionLLMResult, elapsed_ms: float,
                   score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> dict:
    """The JSON answer for one result, in pixels of the image as uploaded.

    ``{"task", "text" (or None), "text_probability" (or None), "objects": [{"name", "score", "box": [x1, y1, x2, y2],
    "polygon": [[x, y], ...] or None}], "regions": [[x1, y1, x2, y2], ...] (the input regions, in
    placeholder order, or the boxes a composed answer grounded, counted or listed) or None,
    "region_names": the names of those composed boxes or None, "image_size": [w, h], "elapsed_ms"}``. Objects scoring
    below ``score_threshold`` are left out, except the one box of grounding, which is the answer
    whatever its score (as the pictures draw it).
    """
    objects = []
    for i, (name, score, box) in enumerate(zip(result.names, result.scores.tolist(), result.boxes.tolist())):
        if score < score_threshold and result.task != "grounding":
            continue
        polygon = None
        if result.polygons is not None and i < len(result.polygons):
            polygon = np.asarray(result.polygons[i], dtype=np.float64).tolist()
        objects.append(dict(name=name, score=float(score), box=[float(v) for v in box], polygon=polygon))
    height, width = result.image_size
    regions = None if result.regions is None else np.asarray(result.regions, dtype=np.float64).tolist()
    return dict(task=result.task, text=result.text, text_probability=result.text_probability, objects=objects,
                regions=regions, region_names=result.region_names,
                image_size=[int(width), int(height)], elapsed_ms=round(float(elapsed_ms), 1))


def open_upload(data: bytes, name: str = "upload") -> Image.Image:
    """Uploaded bytes → a PIL image, checked to decode completely.

    The returned image is freshly opened (not yet decoded), so the inference API still sees the
    size of the image as uploaded and reduces a huge one while decoding. Raises
    :class:`InputError` (one line) for empty or undecodable bytes.
    """
    if not data:
        raise InputError(f"the uploaded image {name} is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            load_image(probe)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, InputError):
            raise
        if isinstance(err, UnidentifiedImageError):  # PIL names the file object; name the upload
            reason = f"cannot identify image file {name!r}"
        else:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read image {name}: {reason}") from None
    return Image.open(io.BytesIO(data))


def check_score_threshold(value: Optional[float]) -> float:
    if value is None:
        return DEFAULT_SCORE_THRESHOLD
    if not 0.0 <= value <= 1.0:
        raise InputError(f"score_threshold must be in [0, 1], got {value}")
    return float(value)


def _json_field(name: str, text: Optional[str], shape: str):
    """A form field holding JSON (None or blank: not given) → the decoded value."""
    if text is None or not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"form field {name!r} is not valid JSON ({err.msg} at character {err.pos}); "
                         f"expected {shape}") from None


def parse_regions_field(text: Optional[str]) -> Optional[list]:
    """The ``regions`` form field: a JSON list of ``[x1, y1, x2, y2]`` boxes (pixels of the
    uploaded image), or None when absent or blank. Only the JSON and its outer shape are checked
    here; the boxes are checked against the instruction and the image by ``parse_regions``."""
    regions = _json_field("regions", text, "a list of [x1, y1, x2, y2] boxes")
    if regions is not None and not isinstance(regions, list):
        raise InputError(f"form field 'regions' must be a JSON list of [x1, y1, x2, y2] boxes, "
                         f"got {type(regions).__name__}")
    return regions


def parse_history_field(text: Optional[str]) -> Optional[List[dict]]:
    """The ``history`` form field: a JSON list of earlier turns ``{"user": str, "assistant": str}``,
    oldest first (None when absent, blank or empty). Earlier user turns must not hold
    ``<region>``: their boxes are not sent again, so a client writes a region there as text."""
    turns = _json_field("history", text, 'a list of {"user": ..., "assistant": ...} turns')
    if turns is None:
        return None
    if not isinstance(turns, list):
        raise InputError(f"form field 'history' must be a JSON list of turns, got {type(turns).__name__}")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or set(turn) != {"user", "assistant"} \
                or not all(isinstance(turn[key], str) for key in ("user", "assistant")):
            raise InputError(f"history turn {i} must be an object with the text fields 'user' and 'assistant' "
                             f"only, got {json.dumps(turn)[:80]}")
        if REGION_PLACEHOLDER in turn["user"] or REGION_PLACEHOLDER in turn["assistant"]:
            raise InputError(f"history turn {i} contains {REGION_PLACEHOLDER}: regions are given for the new "
                             f"instruction only; write an earlier turn's region as text")
    return turns or None


class ModelService:
    """The loaded inferencer behind a one-thread queue: calls run one at a time, in order.

    ``pending`` counts calls submitted and not finished (queued or running); health checks read
    it without waiting for the model.
    """

    def __init__(self, inferencer, config_name: str = "", checkpoint_name: str = ""):
        self.inferencer = inferencer
        self.config_name = config_name
        self.checkpoint_name = checkpoint_name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visionllm-model")
        self._count_lock = threading.Lock()
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, image: Image.Image, instruction: str, score_threshold: float,
               regions: Optional[list] = None, history: Optional[List[dict]] = None) -> Future:
        """Queue one call (``regions`` and ``history`` as the inferencer takes them); the future
        gives ``(VisionLLMResult, answer dict)``."""
        with self._count_lock:
            self._pending += 1
        future = self._executor.submit(self._run, image, instruction, score_threshold, regions, history)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Future) -> None:
        with self._count_lock:
            self._pending -= 1

    def _run(self, image: Image.Image, instruction: str, score_threshold: float,
             regions: Optional[list] = None, history: Optional[List[dict]] = None):
        start = time.perf_counter()
        result = self.inferencer(image, instruction, regions=regions, history=history,
                                 score_threshold=score_threshold)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        return result, result_to_dict(result, elapsed_ms, score_threshold)

    def infer(self, image: Image.Image, instruction: str, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
              regions: Optional[list] = None, history: Optional[List[dict]] = None):
        """Blocking call from a worker thread (the web page's handlers)."""
        return self.submit(image, instruction, score_threshold, regions, history).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class UploadSizeLimit:
    """ASGI middleware: HTTP 413 for a request body over ``max_bytes`` on ``paths``.

    A declared Content-Length over the limit is answered before any of the body is read (the
    server discards the rest); a streamed body is counted while it arrives and refused as soon
    as it passes the limit, so nothing over the limit is ever decoded.
    """

    def __init__(self, app, max_bytes: int, paths=(INFER_PATH,)):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.paths = frozenset(paths)
        self.message = f"the upload is larger than the limit of {self.max_bytes / 2 ** 20:g} MB"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse({"error": self.message}, status_code=413)(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        return await self.app(scope, counting_receive, send)


def _first_line(errors) -> str:
    """A FastAPI validation error list → one line naming the field."""
    if not errors:
        return "bad request"
    error = errors[0]
    field = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
    return f"bad field {field!r}: {error.get('msg', 'invalid value')}"


def create_app(service: ModelService, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, page: bool = True,
               page_options: Optional[dict] = None):
    """The FastAPI application: routes, error answers, the upload limit and (optionally) the page.

    Returns the ASGI application to run (the FastAPI app wrapped in :class:`UploadSizeLimit`).
    """
    from fastapi import FastAPI, File, Form, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    import visionllm

    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
    max_bytes = int(max_upload_mb * 2 ** 20)
    app = FastAPI(title="VisionLLM", version=visionllm.__version__)

    @app.exception_handler(RequestValidationError)
    async def _bad_fields(request, exc):
        return JSONResponse({"error": _first_line(exc.errors())}, status_code=400)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.get("/healthz")
    async def healthz():
        return dict(status="ok", model_loaded=service.inferencer is not None, version=visionllm.__version__,
                    config=service.config_name, checkpoint=service.checkpoint_name,
                    max_upload_mb=max_upload_mb, pending=service.pending)

    @app.post(INFER_PATH)
    async def infer(image: Optional[UploadFile] = File(None), instruction: Optional[str] = Form(None),
                    score_threshold: Optional[float] = Form(None), regions: Optional[str] = Form(None),
                    history: Optional[str] = Form(None)):
        """Multipart form: ``image`` (file), ``instruction`` (text), optional ``score_threshold``,
        ``regions`` (JSON list of boxes) and ``history`` (JSON list of earlier turns)."""
        try:
            if image is None:
                raise InputError("missing form field 'image' (the image file, multipart/form-data)")
            if instruction is None:
                raise InputError("missing form field 'instruction' (text containing <image>)")
            threshold = check_score_threshold(score_threshold)
            boxes, turns = parse_regions_field(regions), parse_history_field(history)
            check_instruction(instruction, turns)
            data = await image.read()
            picture = await run_in_threadpool(open_upload, data, image.filename or "upload")
            check_request(picture, instruction, boxes, turns)
            _, answer = await asyncio.wrap_future(service.submit(picture, instruction, threshold, boxes, turns))
        except InputError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        except Exception as err:  # the model failed on valid input: report it, keep serving
            logger.exception("inference failed")
            return JSONResponse({"error": f"inference failed: {type(err).__name__}: {err}"}, status_code=500)
        return answer

    if page:
        from visionllm.apis.web_page import mount_page

        app = mount_page(app, service, max_bytes=max_bytes, **(page_options or {}))
    return UploadSizeLimit(app, max_bytes)


def serve(config: str, checkpoint: Optional[str], host: str = "127.0.0.1", port: int = 7860,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, device: str = "cpu", page_options: Optional[dict] = None):
    """Load the model once and serve it until interrupted."""
    import uvicorn

    from visionllm.apis.inferencer import VisionLLMInferencer

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    inferencer = VisionLLMInferencer(config, checkpoint, device=device)
    service = ModelService(inferencer, os.path.basename(config), os.path.basename(checkpoint or ""))
    application = create_app(service, max_upload_mb, page_options=page_options)
    logger.info("serving %s on http://%s:%d", os.path.basename(config), host, port)
    try:
        uvicorn.run(application, host=host, port=port, log_level="info")
    finally:
        service.shutdown()
