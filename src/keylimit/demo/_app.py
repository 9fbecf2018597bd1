"""``demo_model_app()``: a deterministic OpenAI-compatible model, with no auth and no limits of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .._errors import error_body
from ._requests import (
    MODEL_ID,
    InvalidRequest,
    Sampling,
    chat_request,
    check_model,
    completion_request,
    embedding_request,
    parse_json,
)
from ._shapes import (
    DONE,
    MODEL,
    Answer,
    chat_chunks,
    chat_completion,
    completion_chunks,
    embedding,
    sse,
    text_completion,
)
from ._text import count_tokens, embed, generate


def demo_model_app(*, token_delay: float = 0.0) -> Starlette:
    """The demo model's routes, relative to where it is mounted (``/models``, ``/chat/completions``, …).

    ``token_delay`` seconds pass between streamed tokens, so that a stream can be watched.
    Parameters that do not change its deterministic text (``temperature``, ``seed``,
    ``echo``, ``logprobs``, ``tools``, …) are accepted and ignored.
    """
    if token_delay < 0:
        raise ValueError("token_delay must be >= 0")

    async def chat_completions(request: Request) -> Response:
        req = chat_request(parse_json(await request.body()))
        answer = _answer([_prompt(req.prompt)], req.sampling)
        if req.sampling.stream:
            return _stream(chat_chunks(answer, req.sampling), req.sampling, token_delay)
        return JSONResponse(chat_completion(answer))

    async def completions(request: Request) -> Response:
        req = completion_request(parse_json(await request.body()))
        answer = _answer([_prompt(p) for p in req.prompts], req.sampling)
        if req.sampling.stream:
            return _stream(completion_chunks(answer, req.sampling), req.sampling, token_delay)
        return JSONResponse(text_completion(answer))

    routes = [
        Route("/models", list_models, methods=["GET"]),
        Route("/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/completions", completions, methods=["POST"]),
        Route("/embeddings", embeddings, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={InvalidRequest: _invalid_request, HTTPException: _http_exception},
    )


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [MODEL]})


async def get_model(request: Request) -> Response:
    check_model(request.path_params["model_id"])
    return JSONResponse(MODEL)


async def embeddings(request: Request) -> Response:
    req = embedding_request(parse_json(await request.body()))
    data, prompt_tokens = [], 0
    for i, item in enumerate(req.inputs):
        seed, tokens = _prompt(item)
        data.append(embedding(i, embed(seed, req.dimensions), req.base64))
        prompt_tokens += tokens
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    # orjson, not JSONResponse's standard library: floats are most of this answer.
    body = orjson.dumps({"object": "list", "data": data, "model": MODEL_ID, "usage": usage})
    return Response(body, media_type="application/json")


def _prompt(item: str | tuple[int, ...]) -> tuple[bytes, int]:
    """The seed of a prompt and its token count: a token-id array counts one token per id."""
    if isinstance(item, str):
        # Never a lone surrogate: parse_json's parser refuses them, so this encodes.
        return b"s" + item.encode(), count_tokens(item)
    return b"t" + b",".join(str(t).encode() for t in item), len(item)


def _answer(prompts: list[tuple[bytes, int]], sampling: Sampling) -> Answer:
    choices = tuple(
        generate(seed, j, max_tokens=sampling.max_tokens, stop=sampling.stop)
        for seed, _ in prompts
        for j in range(sampling.n)
    )
    return Answer(choices=choices, prompt_tokens=sum(tokens for _, tokens in prompts))


def _stream(chunks: Iterator[dict[str, Any]], sampling: Sampling, token_delay: float) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield sse(chunk, sampling.include_usage)
            if token_delay:
                await asyncio.sleep(token_delay)
        yield DONE

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def _invalid_request(request: Request, exc: Exception) -> Response:
    exc = cast(InvalidRequest, exc)
    return Response(exc.body(), status_code=exc.status, media_type="application/json")


async def _http_exception(request: Request, exc: Exception) -> Response:
    exc = cast(HTTPException, exc)
    if exc.status_code == 405:
        message, code = f"Method {request.method} is not allowed on {request.url.path}.", "method_not_allowed"
    else:
        message, code = f"Invalid URL ({request.method} {request.url.path}).", "unknown_url"
    body = error_body(message, "invalid_request_error", code)
    return Response(body, status_code=exc.status_code, headers=exc.headers, media_type="application/json")
