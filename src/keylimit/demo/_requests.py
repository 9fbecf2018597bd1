"""Reading and checking the demo model's request bodies, with OpenAI's error messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import HTTPError
from ..http._json import loads

MODEL_ID = "keylimit/demo"

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TYPE_NAMES = {bool: "a boolean", int: "an integer", str: "a string", list: "an array", dict: "an object"}
_MAX_CHOICES = 128
_MAX_STOPS = 4
_MAX_INPUTS = 2048
_MAX_DIMENSIONS = 4096
# Every number is made and written on the event loop: a bound on inputs times dimensions keeps
# one request from holding it (2048 inputs of 4096 dimensions each would not).
_MAX_NUMBERS = 2**16


class InvalidRequest(HTTPError):
    """A request body the demo model refuses (400), or names a model it does not serve (404)."""

    type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


@dataclass(frozen=True, slots=True)
class Sampling:
    """What every text endpoint shares: how many choices, how long, where to stop, how to stream."""

    n: int
    max_tokens: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


@dataclass(frozen=True, slots=True)
class ChatRequest:
    prompt: str
    sampling: Sampling


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    prompts: tuple[str | tuple[int, ...], ...]
    sampling: Sampling


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    inputs: tuple[str | tuple[int, ...], ...]
    dimensions: int
    base64: bool


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = loads(raw)
    except ValueError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a JSON object.", param=None, code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"Invalid type for the request body: expected an object, but got {_type_name(body)} instead.",
            param=None,
            code="invalid_type",
        )
    return body


def check_model(model_id: str) -> None:
    if model_id != MODEL_ID:
        raise InvalidRequest(
            f"The model `{model_id}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
            status=404,
        )


def chat_request(body: Mapping[str, Any]) -> ChatRequest:
    _model(body)
    messages = _required(body, "messages", list)
    if not messages:
        raise _invalid_value("messages", "expected a non-empty array")
    texts = [_message_text(message, f"messages[{i}]") for i, message in enumerate(messages)]
    limit = _optional(body, "max_completion_tokens", int, minimum=1)
    if limit is None:
        limit = _optional(body, "max_tokens", int, minimum=1)
    return ChatRequest(prompt="\n".join(texts), sampling=_sampling(body, limit))


def completion_request(body: Mapping[str, Any]) -> CompletionRequest:
    _model(body)
    prompt = _required(body, "prompt", (str, list))
    prompts = _texts_or_token_arrays(prompt, "prompt")
    # OpenAI's legacy completions stop at 16 tokens when max_tokens is not given.
    limit = _optional(body, "max_tokens", int, minimum=1)
    sampling = _sampling(body, 16 if limit is None else limit)
    if len(prompts) * sampling.n > _MAX_CHOICES:
        raise _invalid_value("n", f"expected at most {_MAX_CHOICES} choices in all (prompts times n)")
    return CompletionRequest(prompts=prompts, sampling=sampling)


def embedding_request(body: Mapping[str, Any]) -> EmbeddingRequest:
    _model(body)
    inputs = _texts_or_token_arrays(_required(body, "input", (str, list)), "input")
    if len(inputs) > _MAX_INPUTS:
        raise _invalid_value("input", f"expected at most {_MAX_INPUTS} inputs")
    dimensions = _optional(body, "dimensions", int, minimum=1)
    if dimensions is not None and dimensions > _MAX_DIMENSIONS:
        raise _invalid_value("dimensions", f"expected a value <= {_MAX_DIMENSIONS}")
    if len(inputs) * (dimensions or 16) > _MAX_NUMBERS:
        raise _invalid_value("dimensions", f"expected at most {_MAX_NUMBERS} numbers in all (inputs times dimensions)")
    encoding = _optional(body, "encoding_format", str)
    if encoding not in (None, "float", "base64"):
        raise _invalid_value("encoding_format", "expected 'float' or 'base64'")
    return EmbeddingRequest(inputs=inputs, dimensions=dimensions or 16, base64=encoding == "base64")


def _model(body: Mapping[str, Any]) -> None:
    check_model(_required(body, "model", str))


def _sampling(body: Mapping[str, Any], max_tokens: int | None) -> Sampling:
    n = _optional(body, "n", int, minimum=1)
    if n is not None and n > _MAX_CHOICES:
        raise _invalid_value("n", f"expected a value <= {_MAX_CHOICES}")
    stop = _optional(body, "stop", (str, list))
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > _MAX_STOPS or not all(isinstance(s, str) for s in stops):
        raise _invalid_value("stop", f"expected a string or an array of at most {_MAX_STOPS} strings")
    stream = bool(_optional(body, "stream", bool))
    options = _optional(body, "stream_options", dict)
    include_usage = _optional(options or {}, "include_usage", bool, name="stream_options.include_usage")
    return Sampling(
        n=n or 1, max_tokens=max_tokens, stop=stops, stream=stream, include_usage=stream and bool(include_usage)
    )


def _message_text(message: object, name: str) -> str:
    if not isinstance(message, dict):
        raise _invalid_type(name, message, dict)
    role = _required(message, "role", str, name=f"{name}.role")
    if role not in _ROLES:
        raise _invalid_value(f"{name}.role", f"expected one of {', '.join(sorted(_ROLES))}")
    content = _optional(message, "content", (str, list), name=f"{name}.content")
    if not isinstance(content, list):
        return content or ""
    texts = []
    for i, part in enumerate(content):
        part_name = f"{name}.content[{i}]"
        if not isinstance(part, dict):
            raise _invalid_type(part_name, part, dict)
        if _required(part, "type", str, name=f"{part_name}.type") == "text":
            texts.append(_required(part, "text", str, name=f"{part_name}.text"))
    return "\n".join(texts)


def _texts_or_token_arrays(value: str | list[Any], name: str) -> tuple[str | tuple[int, ...], ...]:
    """A string, an array of strings, an array of token ids, or an array of arrays of token ids."""
    if isinstance(value, str):
        return (value,)
    if not value:
        raise _invalid_value(name, "expected a non-empty string or array")
    if all(_is_token_id(t) for t in value):
        return (tuple(value),)
    items: list[str | tuple[int, ...]] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            items.append(item)
        elif isinstance(item, list) and item and all(_is_token_id(t) for t in item):
            items.append(tuple(item))
        else:
            raise _invalid_value(f"{name}[{i}]", "expected a string or a non-empty array of non-negative token ids")
    return tuple(items)


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _required(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], *, name: str = "") -> Any:
    if body.get(key) is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name or key}'.", param=name or key, code="missing_required_parameter"
        )
    return _optional(body, key, kind, name=name)


def _optional(
    body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], *, minimum: int | None = None, name: str = ""
) -> Any:
    value: Any = body.get(key)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int to Python, never to JSON Schema.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _invalid_type(name or key, value, *kinds)
    if minimum is not None and isinstance(value, int) and value < minimum:
        raise InvalidRequest(
            f"Invalid '{name or key}': integer below minimum value. "
            f"Expected a value >= {minimum}, but got {value} instead.",
            param=name or key,
            code="integer_below_min_value",
        )
    return value


def _invalid_type(name: str, value: object, *kinds: type) -> InvalidRequest:
    expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
    return InvalidRequest(
        f"Invalid type for '{name}': expected {expected}, but got {_type_name(value)} instead.",
        param=name,
        code="invalid_type",
    )


def _invalid_value(name: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{name}': {expected}.", param=name, code="invalid_value")


def _type_name(value: object) -> str:
    if isinstance(value, float):
        return "a decimal"
    if value is None:
        return "null"
    return next((label for kind, label in _TYPE_NAMES.items() if isinstance(value, kind)), "a value")
