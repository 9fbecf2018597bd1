"""The official ``openai`` SDK, pointed at the demo model, sees what it would see from OpenAI."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from keylimit.demo import MODEL_ID, count_tokens

from .conftest import BASE_URL, mounted_app

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, world!"}]


@pytest.fixture
async def sdk() -> AsyncIterator[openai.AsyncOpenAI]:
    # openai 3.x is typed for httpx2 clients and accepts httpx ones too.
    http_client = httpx.AsyncClient(transport=httpx.ASGITransport(mounted_app()), base_url=BASE_URL)
    async with openai.AsyncOpenAI(api_key="unused", base_url=BASE_URL, http_client=http_client, max_retries=0) as sdk:
        yield sdk


async def test_models(sdk: openai.AsyncOpenAI) -> None:
    models = [m async for m in sdk.models.list()]
    assert [(m.id, m.owned_by, m.created) for m in models] == [(MODEL_ID, "keylimit", 1705312200)]
    model = await sdk.models.retrieve(MODEL_ID)
    assert model.id == MODEL_ID


async def test_chat(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=5)
    [choice] = completion.choices
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant"
    assert choice.message.content is not None
    assert count_tokens(choice.message.content) == 5
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        4,
        5,
        9,
    )


async def test_chat_stream_with_usage(sdk: openai.AsyncOpenAI) -> None:
    plain = await sdk.chat.completions.create(model=MODEL_ID, messages=HELLO)
    stream = await sdk.chat.completions.create(
        model=MODEL_ID,
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish_reasons, usages = "", [], []
    async for chunk in stream:
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish_reasons.append(choice.finish_reason)
    assert text == plain.choices[0].message.content
    assert finish_reasons[-1] == "stop"
    assert set(finish_reasons[:-1]) == {None}
    assert usages == [plain.usage]


async def test_completions_stream_and_not(sdk: openai.AsyncOpenAI) -> None:
    plain = await sdk.completions.create(model=MODEL_ID, prompt="Say this is a test", max_tokens=7)
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage is not None
    assert plain.usage.completion_tokens == count_tokens(plain.choices[0].text) == 7
    assert plain.usage.prompt_tokens == 5
    stream = await sdk.completions.create(
        model=MODEL_ID, prompt="Say this is a test", max_tokens=7, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.text for chunk in chunks for c in chunk.choices) == plain.choices[0].text
    assert chunks[-1].usage == plain.usage


@pytest.mark.parametrize("as_floats", [True, False])
async def test_embeddings(sdk: openai.AsyncOpenAI, as_floats: bool) -> None:
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    inputs = ["Hello, world!", "bye"]
    if as_floats:
        response = await sdk.embeddings.create(model=MODEL_ID, input=inputs, encoding_format="float")
    else:
        response = await sdk.embeddings.create(model=MODEL_ID, input=inputs)
    assert [d.index for d in response.data] == [0, 1]
    for item in response.data:
        assert len(item.embedding) == 16
        assert math.sqrt(sum(x * x for x in item.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (5, 5)


async def test_errors_raise_the_sdk_exceptions(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        await sdk.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=0)
    assert (bad.value.code, bad.value.param) == ("integer_below_min_value", "max_tokens")
