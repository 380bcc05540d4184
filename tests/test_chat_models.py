"""ChatPersonaJudge on tiny in-process models: no weights are loaded or downloaded.

``load_model`` is patched to return a tiny random Llama with a byte-level ChatML tokenizer.
``DecoderSpy`` wraps the decoder: it records each call (both roles' contexts, the settings,
the tokens yielded and the returned stats) and either runs the real decoder or plays a
scripted token sequence under the decoder's contract (EOS ends and is counted, ``stop_when``
is checked after every yielded token, ``max_new_tokens`` caps the emitted count).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

import pytest
import torch
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk
from langchain_core.runnables import RunnableBinding
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel, Field
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from langchain_persona_judge import ChatPersonaJudge, chat_models
from langchain_persona_judge.decoding import DecodeStats, stream_persona_judge
from langchain_persona_judge.loading import LoadedModel
from langchain_persona_judge.prompts import TOOL_CALL_OPEN, tool_call_prefix
from tests.tiny import tiny_llama, tiny_tokenizer

EOS = 2  # <|im_end|> in the tiny tokenizer


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(description="The city")


class GetTime(BaseModel):
    """Get the current time in a time zone."""

    zone: str


class Big(BaseModel):
    """A person."""

    name: str
    age: int
    hobbies: list[str]


@dataclass
class DecoderCall:
    draft_ids: list[int]
    judge_ids: list[int]
    kwargs: dict[str, Any]
    same_model: bool
    tokens: list[int] = field(default_factory=list)
    stats: DecodeStats | None = None


class DecoderSpy:
    """Stand-in for ``stream_persona_judge``: the real decoder, or a token script."""

    def __init__(self, script: list[int] | None = None, delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self.calls: list[DecoderCall] = []

    def __call__(
        self,
        draft_model: PreTrainedModel,
        draft_input_ids: list[int],
        judge_model: PreTrainedModel,
        judge_input_ids: list[int],
        **kwargs: Any,
    ) -> Generator[int, None, DecodeStats]:
        call = DecoderCall(
            list(draft_input_ids), list(judge_input_ids), kwargs, draft_model is judge_model
        )
        self.calls.append(call)
        if self.script is None:
            inner = stream_persona_judge(
                draft_model, draft_input_ids, judge_model, judge_input_ids, **kwargs
            )
        else:
            inner = self._play(self.script, kwargs)
        return self._record(inner, call)

    @staticmethod
    def _record(
        inner: Generator[int, None, DecodeStats], call: DecoderCall
    ) -> Generator[int, None, DecodeStats]:
        while True:
            try:
                token = next(inner)
            except StopIteration as finished:
                call.stats = finished.value
                return finished.value
            call.tokens.append(token)
            yield token

    def _play(self, script: list[int], kwargs: dict[str, Any]) -> Generator[int, None, DecodeStats]:
        stats = DecodeStats()
        generated: list[int] = []
        for token in script:
            if stats.emitted >= kwargs["max_new_tokens"]:
                return stats
            stats.emitted += 1
            if token in kwargs["eos_token_id"]:
                stats.finish_reason = "stop"
                return stats
            generated.append(token)
            yield token
            time.sleep(self.delay)
            if kwargs["stop_when"](generated):
                stats.finish_reason = "stop"
                return stats
        return stats


class TokenCounter(BaseCallbackHandler):
    """Records every on_llm_new_token call, per run."""

    def __init__(self) -> None:
        self.tokens: dict[UUID, list[str]] = defaultdict(list)

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        assert isinstance(token, str)
        self.tokens[run_id].append(token)

    @property
    def count(self) -> int:
        return sum(len(tokens) for tokens in self.tokens.values())


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer: PreTrainedTokenizerFast) -> LoadedModel:
    model = tiny_llama(len(tokenizer), seed=0, logit_scale=4.0)
    return LoadedModel(model, tokenizer, "tiny", torch.device("cpu"), torch.float32)


@pytest.fixture(autouse=True)
def loads(monkeypatch: pytest.MonkeyPatch, tiny: LoadedModel) -> list[str]:
    """Every model name ``load_model`` was asked for; all resolve to the tiny model."""
    names: list[str] = []

    def fake_load_model(model: str, **kwargs: Any) -> LoadedModel:
        names.append(model)
        return tiny

    monkeypatch.setattr(chat_models, "load_model", fake_load_model)
    return names


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> DecoderSpy:
    """The real decoder, recorded."""
    decoder = DecoderSpy()
    monkeypatch.setattr(chat_models, "stream_persona_judge", decoder)
    return decoder


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch, tokenizer: PreTrainedTokenizerFast) -> Any:
    """``script(text, eos=True)``: make the decoder emit exactly ``text`` (then EOS)."""

    def install(text: str, *, eos: bool = True, delay: float = 0.0) -> DecoderSpy:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        decoder = DecoderSpy([*ids, EOS] if eos else ids, delay=delay)
        monkeypatch.setattr(chat_models, "stream_persona_judge", decoder)
        return decoder

    return install


def decode(tokenizer: PreTrainedTokenizerFast, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=False))


def aggregate(chunks: Sequence[BaseMessage]) -> AIMessageChunk:
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    total = cast("AIMessageChunk", chunks[0])
    for chunk in chunks[1:]:
        total = total + cast("AIMessageChunk", chunk)
    return total


def llm_for_tests(**kwargs: Any) -> ChatPersonaJudge:
    settings: dict[str, Any] = {
        "draft_preference": "Talk like a pirate.",
        "judge_preference": "Be brief.",
        "max_tokens": 64,
        "seed": 7,
    }
    return ChatPersonaJudge(**(settings | kwargs))


class TestInvoke:
    def test_weights_load_lazily(self, loads: list[str], spy: DecoderSpy) -> None:
        llm = llm_for_tests()
        assert loads == []
        llm.invoke("hi")
        assert loads == ["smollm2-135m-instruct"]

    def test_usage_and_metadata_match_the_decode(
        self, spy: DecoderSpy, tokenizer: PreTrainedTokenizerFast
    ) -> None:
        message = llm_for_tests().invoke("hi")
        (call,) = spy.calls
        assert call.stats is not None
        # the random model's bytes may end in an undecodable sequence (U+FFFD), which is dropped
        decoded = tokenizer.decode(call.tokens, skip_special_tokens=True)
        assert isinstance(decoded, str)
        assert message.text == decoded.rstrip("\ufffd")
        ended_on_eos = call.stats.finish_reason == "stop"  # no stop sequences here
        assert message.usage_metadata == {
            "input_tokens": len(call.draft_ids) + len(call.judge_ids),
            "output_tokens": len(call.tokens) + ended_on_eos,
            "total_tokens": len(call.draft_ids) + len(call.judge_ids) + call.stats.emitted,
        }
        assert message.usage_metadata["output_tokens"] == call.stats.emitted
        metadata = message.response_metadata
        assert metadata["finish_reason"] == call.stats.finish_reason
        assert metadata["persona_judge"] == call.stats.as_dict()
        assert metadata["model_name"] == metadata["draft_model_name"] == "smollm2-135m-instruct"
        assert metadata["input_tokens_by_role"] == {
            "draft": len(call.draft_ids),
            "judge": len(call.judge_ids),
        }
        assert call.same_model

    def test_each_role_gets_its_preference(
        self, spy: DecoderSpy, tokenizer: PreTrainedTokenizerFast
    ) -> None:
        llm_for_tests().invoke([("system", "You help."), ("human", "hi")])
        (call,) = spy.calls
        draft, judge = decode(tokenizer, call.draft_ids), decode(tokenizer, call.judge_ids)
        assert "You help.\n\nUser preference: Talk like a pirate.<|im_end|>" in draft
        assert "You help.\n\nUser preference: Be brief.<|im_end|>" in judge
        assert "Be brief" not in draft

    def test_eos_counts_as_an_output_token(self, script: Any) -> None:
        decoder = script("Hi there")
        message = llm_for_tests().invoke("hi")
        assert message.content == "Hi there"
        assert message.usage_metadata is not None
        assert message.usage_metadata["output_tokens"] == len("Hi there") + 1
        assert message.response_metadata["finish_reason"] == "stop"
        assert decoder.calls[0].kwargs["eos_token_id"] == [EOS]

    def test_length_finish(self, script: Any) -> None:
        script("x" * 40)
        message = llm_for_tests(max_tokens=5).invoke("hi")
        assert message.content == "xxxxx"
        assert message.response_metadata["finish_reason"] == "length"
        assert message.usage_metadata is not None
        assert message.usage_metadata["output_tokens"] == 5

    def test_character_cut_by_max_tokens_is_dropped(self, script: Any) -> None:
        script("🌟🌟🌟", eos=False)  # 4 byte tokens each: 10 tokens end inside the third
        llm = llm_for_tests(max_tokens=10)
        message = llm.invoke("hi")
        assert message.content == "🌟🌟"
        assert message.response_metadata["finish_reason"] == "length"
        chunks = list(llm.stream("hi"))
        assert all("\ufffd" not in str(chunk.content) for chunk in chunks)
        assert aggregate(chunks).content == "🌟🌟"

    def test_fresh_seeds_are_in_the_accepted_range(self, script: Any) -> None:
        script("ok")
        llm = llm_for_tests(seed=None)
        seeds = [llm.invoke("hi").response_metadata["seed"] for _ in range(40)]
        assert all(0 <= seed <= chat_models.MAX_SEED for seed in seeds)
        llm.invoke("hi", seed=seeds[0])  # a reported seed can be passed back

    def test_seed_reproducibility(self, spy: DecoderSpy) -> None:
        llm = llm_for_tests(seed=None, temperature=1.0, top_p=None, max_tokens=24)
        first = llm.invoke("hi")
        seed = first.response_metadata["seed"]
        assert isinstance(seed, int)
        assert llm.invoke("hi", seed=seed).content == first.content
        assert llm.invoke("hi", seed=seed + 1).content != first.content

    def test_bad_requests_leave_no_state(self, spy: DecoderSpy) -> None:
        llm = llm_for_tests()
        good = llm.invoke("hi")
        with pytest.raises(ValueError, match="No messages"):
            llm.invoke([])
        image = HumanMessage(
            content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]
        )
        with pytest.raises(ValueError, match="'image_url' content block"):
            llm.invoke([image])
        with pytest.raises(ValueError, match="judge_weight"):
            llm.invoke("hi", judge_weight=2.0)
        assert llm.invoke("hi").content == good.content

    def test_streaming_field_streams_invoke(self, spy: DecoderSpy) -> None:
        counter = TokenCounter()
        message = llm_for_tests(streaming=True).invoke("hi", config={"callbacks": [counter]})
        (tokens,) = counter.tokens.values()
        assert "".join(tokens) == message.content
        assert message.usage_metadata is not None

    def test_generate_streaming_branch_reports_tokens(self, spy: DecoderSpy) -> None:
        llm = llm_for_tests(streaming=True)
        reported: list[str] = []

        class RunManager:
            def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
                reported.append(token)

        result = llm._generate([HumanMessage("hi")], run_manager=RunManager())  # type: ignore[arg-type]
        assert "".join(reported) == result.generations[0].message.content
        assert len(reported) >= 2  # text deltas and the final chunk


class TestStream:
    def test_stream_matches_invoke(self, spy: DecoderSpy) -> None:
        llm = llm_for_tests()
        counter = TokenCounter()
        chunks = list(llm.stream("hi", config={"callbacks": [counter]}))
        assert counter.count == len(chunks)
        assert [chunk.chunk_position for chunk in chunks[:-1]] == [None] * (len(chunks) - 1)
        last = chunks[-1]
        assert last.chunk_position == "last"
        assert last.usage_metadata is not None
        assert all(chunk.usage_metadata is None for chunk in chunks[:-1])
        assert last.response_metadata["finish_reason"] in ("stop", "length")
        streamed = aggregate(chunks)
        invoked = llm.invoke("hi")
        assert streamed.content == invoked.content
        assert streamed.usage_metadata == invoked.usage_metadata
        assert (
            streamed.response_metadata["persona_judge"]
            == (invoked.response_metadata["persona_judge"])
        )

    def test_one_chunk_per_text_delta(self, script: Any) -> None:
        script("ab€")  # the euro sign spans three byte tokens: one delta
        chunks = list(llm_for_tests().stream("hi"))
        assert [chunk.content for chunk in chunks] == ["a", "b", "€", ""]

    async def test_astream_and_ainvoke_match_sync(self, spy: DecoderSpy) -> None:
        llm = llm_for_tests()
        counter = TokenCounter()
        chunks = [c async for c in llm.astream("hi", config={"callbacks": [counter]})]
        assert counter.count == len(chunks)
        assert chunks[-1].chunk_position == "last"
        message = await llm.ainvoke("hi")
        assert aggregate(chunks).content == message.content == llm.invoke("hi").content
        assert message.usage_metadata == aggregate(chunks).usage_metadata

    async def test_astream_errors_propagate(self, spy: DecoderSpy) -> None:
        with pytest.raises(TypeError, match="bogus"):
            async for _ in llm_for_tests().astream("hi", bogus=1):
                pass

    async def test_leaving_astream_stops_decoding(self, script: Any) -> None:
        decoder = script("y" * 200, delay=0.01)
        chunks = cast(
            "AsyncGenerator[AIMessageChunk, None]", llm_for_tests(max_tokens=200).astream("hi")
        )
        async with contextlib.aclosing(chunks) as stream:
            async for _ in stream:
                break
        await self._wait_for_end(decoder)
        stats = decoder.calls[0].stats
        assert stats is not None
        assert stats.finish_reason == "stop"
        assert stats.emitted < 50

    async def test_cancelling_ainvoke_stops_decoding(self, script: Any) -> None:
        decoder = script("y" * 200, delay=0.01)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(llm_for_tests(max_tokens=200).ainvoke("hi"), timeout=0.1)
        await self._wait_for_end(decoder)
        stats = decoder.calls[0].stats
        assert stats is not None
        assert stats.emitted < 50

    @staticmethod
    async def _wait_for_end(decoder: DecoderSpy) -> None:
        for _ in range(200):
            if decoder.calls and decoder.calls[0].stats is not None:
                return
            await asyncio.sleep(0.01)

    def test_batch_is_thread_safe(self, spy: DecoderSpy) -> None:
        llm = llm_for_tests(streaming=True, max_tokens=12)
        prompts: list[LanguageModelInput] = ["one", "two", "three", "four"]
        counter = TokenCounter()
        batched = llm.batch(prompts, config={"callbacks": [counter], "max_concurrency": 4})
        sequential = [llm.invoke(prompt) for prompt in prompts]
        assert [m.content for m in batched] == [m.content for m in sequential]
        assert sorted("".join(t) for t in counter.tokens.values()) == sorted(
            str(m.content) for m in batched
        )

    async def test_abatch(self, spy: DecoderSpy) -> None:
        llm = llm_for_tests()
        results = await llm.abatch(["one", "two"])
        assert [m.content for m in results] == [
            llm.invoke("one").content,
            llm.invoke("two").content,
        ]


class TestStop:
    def test_stop_cuts_text_and_ends_generation(self, script: Any) -> None:
        decoder = script("Hello END world and more")
        message = llm_for_tests(max_tokens=100).invoke("hi", stop=["END"])
        assert message.content == "Hello "
        assert message.response_metadata["finish_reason"] == "stop"
        (call,) = decoder.calls
        assert len(call.tokens) == len("Hello END")  # stopped as soon as the stop appeared
        assert message.usage_metadata is not None
        assert message.usage_metadata["output_tokens"] == len("Hello END")

    def test_stop_when_streaming(self, script: Any) -> None:
        script("Hello END world")
        chunks = list(llm_for_tests(stop=["END"]).stream("hi"))
        assert "".join(str(c.content) for c in chunks) == "Hello "

    def test_bare_string_is_one_stop_sequence(self, script: Any) -> None:
        script("Oh Hello world. How are you?")
        llm = llm_for_tests(max_tokens=100)
        expected = "Oh Hello world. "
        assert llm.invoke("hi", stop="How").content == expected  # type: ignore[arg-type]
        assert llm.bind(stop="How").invoke("hi").content == expected
        streamed = llm.stream("hi", stop="How")  # type: ignore[arg-type]
        assert "".join(str(c.content) for c in streamed) == expected
        field = llm_for_tests(max_tokens=100, stop="How")
        assert field.stop == ["How"]
        assert field.invoke("hi").content == expected
        assert llm._get_ls_params(stop="How")["ls_stop"] == ["How"]  # type: ignore[arg-type]

    @pytest.mark.parametrize("stop", [[123], ["ok", None], 5])
    def test_non_string_stops_are_rejected(self, spy: DecoderSpy, stop: Any) -> None:
        with pytest.raises((TypeError, ValueError), match="stop must be a string or a list"):
            ChatPersonaJudge(stop=stop)
        with pytest.raises(TypeError, match="stop must be a string or a list"):
            llm_for_tests().invoke("hi", stop=stop)
        with pytest.raises(TypeError, match="stop must be a string or a list"):
            llm_for_tests().bind(stop=stop).invoke("hi")
        assert spy.calls == []

    @pytest.mark.parametrize("text", ["a ### b END c", "a END b ### c"])
    def test_model_and_call_stops_combine(self, script: Any, text: str) -> None:
        script(text)
        llm = llm_for_tests(stop=["###"])
        assert llm.invoke("hi", stop=["END"]).content == "a "
        assert llm._get_ls_params(stop=["END"])["ls_stop"] == ["###", "END"]


class TestOptions:
    def test_per_call_overrides_reach_the_decoder(self, spy: DecoderSpy) -> None:
        llm_for_tests().invoke(
            "hi",
            gamma=7,
            judge_weight=0.9,
            target="geometric",
            temperature=0.0,
            top_k=5,
            top_p=None,
            max_tokens=9,
        )
        kwargs = spy.calls[0].kwargs
        assert {k: kwargs[k] for k in ("gamma", "judge_weight", "target", "max_new_tokens")} == {
            "gamma": 7,
            "judge_weight": 0.9,
            "target": "geometric",
            "max_new_tokens": 9,
        }
        assert (kwargs["temperature"], kwargs["top_k"], kwargs["top_p"]) == (0.0, 5, None)
        assert kwargs["reproduce_research_code"] is False

    def test_bound_preferences(self, spy: DecoderSpy, tokenizer: PreTrainedTokenizerFast) -> None:
        llm_for_tests().bind(judge_preference="Answer in French.", draft_preference=None).invoke(
            "hi"
        )
        call = spy.calls[0]
        assert "User preference: Answer in French." in decode(tokenizer, call.judge_ids)
        assert "User preference" not in decode(tokenizer, call.draft_ids)

    def test_defaults_reach_the_decoder(self, spy: DecoderSpy) -> None:
        ChatPersonaJudge(max_tokens=3).invoke("hi")
        kwargs = spy.calls[0].kwargs
        assert (kwargs["gamma"], kwargs["judge_weight"], kwargs["target"]) == (4, 0.5, "mixture")
        assert (kwargs["temperature"], kwargs["top_k"], kwargs["top_p"]) == (0.7, None, 0.9)

    def test_unknown_kwarg_is_an_error(self, spy: DecoderSpy) -> None:
        with pytest.raises(TypeError, match=r"temprature.*temperature"):
            llm_for_tests().invoke("hi", temprature=0.2)
        assert spy.calls == []

    def test_bad_override_type(self) -> None:
        with pytest.raises(ValueError, match="Invalid gamma='four'"):
            llm_for_tests().invoke("hi", gamma="four")

    @pytest.mark.parametrize(
        ("settings", "message"),
        [
            ({"judge_weight": 1.5}, "judge_weight must be in"),
            ({"gamma": 0}, "gamma"),
            ({"temperature": -0.1}, r"temperature must be .*>= 0"),
            ({"top_k": 0}, "top_k"),
            ({"top_p": 0.0}, "top_p"),
            ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
            ({"target": "sum"}, "target"),
            ({"reproduce_research_code": True, "judge_weight": 0.7}, "reproduce_research_code"),
            ({"stop": [""]}, "Stop sequences must be non-empty"),
            ({"judge_weigth": 0.3}, "judge_weigth"),
            ({"seed": 2**70}, r"seed must be None or an integer in \[0, 2\*\*63 - 1\]"),
            ({"seed": 2**63}, "seed must be None or an integer"),
            ({"seed": -1}, "seed must be None or an integer"),
            ({"temperature": math.inf}, "temperature must be a finite number"),
            ({"temperature": math.nan}, "temperature must be a finite number"),
            ({"judge_weight": math.nan}, "judge_weight must be a finite number"),
            ({"top_p": math.nan}, "top_p must be a finite number"),
            ({"device": "tpu9"}, "Unknown device 'tpu9'"),
            ({"dtype": "float8"}, "Unknown dtype 'float8'"),
            ({"max_tokens": True}, "expected a number, got True"),
            ({"gamma": False}, "expected a number, got False"),
            ({"top_k": True}, "expected a number, got True"),
            ({"seed": True}, "expected a number, got True"),
            ({"temperature": True}, "expected a number, got True"),
            ({"model": " "}, "model is empty"),
            ({"draft_model": ""}, "draft_model is empty"),
            ({"judge_weight": True}, "expected a number, got True"),
            ({"top_p": False}, "expected a number, got False"),
        ],
    )
    def test_construction_validation(self, settings: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            ChatPersonaJudge(**settings)

    @pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
    def test_unavailable_device_fails_at_construction(self) -> None:
        with pytest.raises(ValueError, match="CUDA is not available"):
            ChatPersonaJudge(device="cuda")

    def test_valid_device_and_dtype(self) -> None:
        llm = ChatPersonaJudge(device="cpu", dtype="bfloat16", seed=2**63 - 1)
        assert (llm.device, llm.dtype, llm.seed) == ("cpu", "bfloat16", 2**63 - 1)

    @pytest.mark.parametrize(
        ("option", "value", "message"),
        [
            ("seed", 2**70, "seed must be None or an integer"),
            ("seed", -5, "seed must be None or an integer"),
            ("temperature", math.inf, "temperature must be a finite number"),
            ("top_p", math.nan, "top_p must be a finite number"),
            ("judge_weight", math.inf, "judge_weight must be a finite number"),
            ("max_tokens", True, "Invalid max_tokens=True: expected a number, got True"),
            ("gamma", True, "Invalid gamma=True: expected a number, got True"),
        ],
    )
    def test_per_call_validation(
        self, spy: DecoderSpy, option: str, value: Any, message: str
    ) -> None:
        llm = llm_for_tests()
        with pytest.raises(ValueError, match=message):
            llm.invoke("hi", **{option: value})
        with pytest.raises(ValueError, match=message):
            llm.bind(**{option: value}).invoke("hi")
        assert spy.calls == []

    def test_research_layout(self, spy: DecoderSpy, tokenizer: PreTrainedTokenizerFast) -> None:
        llm_for_tests(reproduce_research_code=True).invoke("Why?")
        call = spy.calls[0]
        assert call.kwargs["reproduce_research_code"] is True
        assert decode(tokenizer, call.judge_ids) == (
            "<|im_start|>user\nBe brief.<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
            "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
        )

    def test_separate_draft_model(
        self,
        monkeypatch: pytest.MonkeyPatch,
        tiny: LoadedModel,
        tokenizer: PreTrainedTokenizerFast,
        spy: DecoderSpy,
    ) -> None:
        draft = LoadedModel(
            tiny_llama(len(tokenizer), seed=1), tokenizer, "draft", tiny.device, tiny.dtype
        )
        names: list[str] = []

        def fake_load_model(model: str, **kwargs: Any) -> LoadedModel:
            names.append(model)
            return draft if model == "small" else tiny

        monkeypatch.setattr(chat_models, "load_model", fake_load_model)
        message = llm_for_tests(draft_model="small").invoke("hi")
        assert sorted(names) == ["small", "smollm2-135m-instruct"]
        assert not spy.calls[0].same_model
        assert message.response_metadata["draft_model_name"] == "small"

    def test_draft_with_another_tokenizer_is_rejected(
        self, monkeypatch: pytest.MonkeyPatch, tiny: LoadedModel
    ) -> None:
        other_tokenizer = tiny_tokenizer()
        other_tokenizer.add_tokens(["<extra>"])
        other = LoadedModel(
            tiny_llama(len(other_tokenizer), seed=1),
            other_tokenizer,
            "other",
            tiny.device,
            tiny.dtype,
        )
        monkeypatch.setattr(
            chat_models, "load_model", lambda model, **_: other if model == "other" else tiny
        )
        with pytest.raises(ValueError, match="share a tokenizer"):
            llm_for_tests(draft_model="other").invoke("hi")

    def test_ls_params(self) -> None:
        llm = ChatPersonaJudge(temperature=0.3, max_tokens=50, stop=["x"])
        assert llm._get_ls_params(stop=["y"]) == {
            "ls_provider": "persona_judge",
            "ls_model_name": "smollm2-135m-instruct",
            "ls_model_type": "chat",
            "ls_temperature": 0.3,
            "ls_max_tokens": 50,
            "ls_stop": ["x", "y"],
        }
        params = llm._get_ls_params(temperature=0.0, max_tokens=5)
        assert (params["ls_temperature"], params["ls_max_tokens"]) == (0.0, 5)
        assert "ls_stop" in params

    def test_identity(self) -> None:
        llm = ChatPersonaJudge(judge_preference="Be brief.", gamma=6)
        assert llm._llm_type == "persona-judge"
        params = llm._identifying_params
        assert params["judge_preference"] == "Be brief."
        assert params["gamma"] == 6
        assert params["model"] == "smollm2-135m-instruct"

    def test_get_token_ids(self, tokenizer: PreTrainedTokenizerFast) -> None:
        assert ChatPersonaJudge().get_num_tokens("héllo") == len("héllo".encode())


class TestTools:
    def test_forced_tool_call(self, script: Any, tokenizer: PreTrainedTokenizerFast) -> None:
        decoder = script(' "Paris"}}\n</tool_call>')
        llm = llm_for_tests().bind_tools([GetWeather], tool_choice="GetWeather")
        message = llm.invoke("What is the weather in Paris?")
        assert message.content == ""
        assert [(c["name"], c["args"]) for c in message.tool_calls] == [
            ("GetWeather", {"city": "Paris"})
        ]
        call = decoder.calls[0]
        prefix = tool_call_prefix(convert_to_openai_tool(GetWeather))
        for ids in (call.draft_ids, call.judge_ids):
            text = decode(tokenizer, ids)
            assert text.endswith("<|im_start|>assistant\n" + prefix)
            assert "- GetWeather(city: string)" in text.split("<|im_end|>")[0]  # in system

    def test_forced_tool_call_ends_after_the_call(self, script: Any) -> None:
        call_text = ' "Paris"}}\n</tool_call>'
        decoder = script(call_text + "\nThe weather is sunny and warm today.")
        llm = llm_for_tests(max_tokens=200).bind_tools([GetWeather], tool_choice="GetWeather")
        message = llm.invoke("weather?")
        assert message.tool_calls[0]["args"] == {"city": "Paris"}
        assert message.response_metadata["finish_reason"] == "stop"
        assert len(decoder.calls[0].tokens) == len(call_text)

    def test_forced_tool_call_streaming(self, script: Any) -> None:
        script(' "Paris"}}\n</tool_call>')
        llm = llm_for_tests().bind_tools([GetWeather], tool_choice="required")
        chunks = list(llm.stream("weather?"))
        assert all(TOOL_CALL_OPEN not in str(c.content) for c in chunks)
        message = aggregate(chunks)
        assert message.content == ""
        assert [(c["name"], c["args"]) for c in message.tool_calls] == [
            ("GetWeather", {"city": "Paris"})
        ]
        assert message.chunk_position == "last"

    def test_any_tool_with_several_tools_scores_each_offered_tool(
        self, monkeypatch: pytest.MonkeyPatch, script: Any, tokenizer: PreTrainedTokenizerFast
    ) -> None:
        scored: list[dict[str, Any]] = []

        def fake_scores(*args: Any, **kwargs: Any) -> torch.Tensor:
            scored.append({"draft": args[1], "judge": args[3], **kwargs})
            return torch.tensor([-3.0, -1.0])  # GetTime is the more likely prefill

        monkeypatch.setattr(chat_models, "ending_log_probs", fake_scores)
        decoder = script(' "CET"}}\n</tool_call>')
        llm = llm_for_tests(temperature=0, judge_weight=0.3, target="geometric")
        message = llm.bind_tools([GetWeather, GetTime], tool_choice="any").invoke("time?")
        assert [(c["name"], c["args"]) for c in message.tool_calls] == [
            ("GetTime", {"zone": "CET"})
        ]
        time_tool = convert_to_openai_tool(GetTime)
        assert decode(tokenizer, decoder.calls[0].judge_ids).endswith(tool_call_prefix(time_tool))
        (call,) = scored
        assert (call["judge_weight"], call["target"]) == (0.3, "geometric")
        # Only the openings up to the names are scored (argument names would bias the choice).
        openings = ['<tool_call>\n{"name": "GetWeather",', '<tool_call>\n{"name": "GetTime",']
        for role, preference in (("draft", "Talk like a pirate."), ("judge", "Be brief.")):
            texts = [decode(tokenizer, ids) for ids in call[role]]
            assert [t.endswith(o) for t, o in zip(texts, openings, strict=True)] == [True, True]
            assert all(preference in text for text in texts)

    def test_any_tool_with_a_repeated_tool(self, script: Any) -> None:
        script(' "Paris"}}\n</tool_call>')  # one distinct name: no choice to make
        llm = llm_for_tests().bind_tools([GetWeather, GetWeather], tool_choice="any")
        assert llm.invoke("?").tool_calls[0]["args"] == {"city": "Paris"}

    def test_any_tool_is_drawn_from_the_target_when_sampling(
        self, monkeypatch: pytest.MonkeyPatch, script: Any
    ) -> None:
        monkeypatch.setattr(
            chat_models, "ending_log_probs", lambda *a, **k: torch.tensor([0.2, 0.8]).log()
        )
        script(' "x"}}\n</tool_call>')
        llm = llm_for_tests(temperature=1.0).bind_tools([GetWeather, GetTime], tool_choice="any")
        draws = 400
        names = [llm.invoke("?", seed=seed).tool_calls[0]["name"] for seed in range(draws)]
        share = names.count("GetTime") / draws
        assert abs(share - 0.8) < 4 * (0.8 * 0.2 / draws) ** 0.5  # 4 standard errors

    def test_any_tool_choice_runs_on_a_real_model(self, script: Any) -> None:
        script(' "CET"}}\n</tool_call>')  # the choice itself is scored by the tiny model
        llm = llm_for_tests().bind_tools([GetWeather, GetTime], tool_choice="any")
        assert llm.invoke("time?").tool_calls[0]["name"] in {"GetWeather", "GetTime"}

    def test_invented_tool_name_is_an_invalid_call(self, script: Any) -> None:
        script('<tool_call>{"name": "weather_city", "arguments": {"city": "Paris"}}</tool_call>')
        llm = llm_for_tests(max_tokens=200).bind_tools([GetWeather, GetTime])
        message = llm.invoke("weather?")
        assert message.tool_calls == []
        (invalid,) = message.invalid_tool_calls
        assert invalid["name"] == "weather_city"
        assert invalid["error"] == (
            "'weather_city' is not one of the offered tools ['GetTime', 'GetWeather']."
        )
        streamed = aggregate(list(llm.stream("weather?")))  # chunks carry no error text
        assert streamed.tool_calls == []
        assert [c["name"] for c in streamed.invalid_tool_calls] == ["weather_city"]

    def test_auto_tool_choice_with_text(self, script: Any) -> None:
        text = 'Let me check.\n<tool_call>\n{"name": "GetWeather", "arguments": {"city": "Oslo"}}\n'
        decoder = script(text + "</tool_call>\nIt is sunny.")
        llm = llm_for_tests(max_tokens=200).bind_tools([GetWeather])
        message = llm.invoke("weather?")
        assert message.content == "Let me check."
        assert message.tool_calls[0]["args"] == {"city": "Oslo"}
        # The turn ends at the first character that cannot begin another call (one byte
        # token each here), not at max_tokens; the tokens spent are all reported.
        spent = len(text + "</tool_call>\nI")
        assert len(decoder.calls[0].tokens) == spent
        assert message.usage_metadata is not None
        assert message.usage_metadata["output_tokens"] == spent
        assert message.response_metadata["finish_reason"] == "stop"
        streamed = list(llm.stream("weather?"))
        assert "".join(str(c.content) for c in streamed) == "Let me check."
        assert aggregate(streamed).tool_calls[0]["args"] == {"city": "Oslo"}

    def test_auto_tool_choice_parallel_calls(self, script: Any) -> None:
        first = '<tool_call>{"name": "GetWeather", "arguments": {"city": "Oslo"}}</tool_call>\n'
        second = '<tool_call>{"name": "GetTime", "arguments": {"zone": "CET"}}</tool_call>'
        decoder = script(first + second + "\n<tool_response>sunny")
        message = llm_for_tests(max_tokens=300).bind_tools([GetWeather, GetTime]).invoke("?")
        assert [(c["name"], c["args"]) for c in message.tool_calls] == [
            ("GetWeather", {"city": "Oslo"}),
            ("GetTime", {"zone": "CET"}),
        ]
        # "<tool_" could still begin "<tool_call>"; "<tool_r" cannot.
        assert len(decoder.calls[0].tokens) == len(first + second + "\n<tool_r")

    def test_invalid_tool_call(self, script: Any) -> None:
        script('<tool_call>{"name": "GetWeather", "arguments": {"city": }</tool_call>')
        message = llm_for_tests().bind_tools([GetWeather]).invoke("weather?")
        assert message.tool_calls == []
        (invalid,) = message.invalid_tool_calls
        assert invalid["name"] == "GetWeather"  # read from the block even though it is not JSON
        assert "not valid JSON" in str(invalid["error"])

    @pytest.mark.parametrize(
        "block",
        [
            '<tool_call>{"name": "GetWeather", "arguments": "Paris"}</tool_call>',
            '<tool_call>{"arguments": {"city": "Paris"}}</tool_call>',
            '<tool_call>{"name": "GetWeather", "arguments": [1]}</tool_call>',
            '<tool_call>{"name": "GetWeather", "arguments": {"city": ',
        ],
    )
    def test_invalid_tool_call_stays_invalid_when_streamed(self, script: Any, block: str) -> None:
        # LangChain re-parses merged tool-call chunks; a JSON-object body would turn an
        # invalid call into a "valid" one with bogus args.
        script(block)
        llm = llm_for_tests(max_tokens=200).bind_tools([GetWeather])
        invoked = llm.invoke("weather?")
        streamed: Any = None
        for chunk in llm.stream("weather?"):
            streamed = chunk if streamed is None else streamed + chunk
        for message in (invoked, streamed):
            assert message.tool_calls == []
            assert [c["args"] for c in message.invalid_tool_calls] == [block]

    def test_tool_choice_none_offers_no_tools(
        self, script: Any, tokenizer: PreTrainedTokenizerFast
    ) -> None:
        decoder = script('<tool_call>{"name": "GetWeather", "arguments": {}}</tool_call>')
        message = llm_for_tests().bind_tools([GetWeather], tool_choice="none").invoke("hi")
        assert message.tool_calls == []
        assert str(message.content).startswith(TOOL_CALL_OPEN)
        assert "GetWeather" not in decode(tokenizer, decoder.calls[0].judge_ids)

    def test_unknown_tool_choice(self) -> None:
        with pytest.raises(ValueError, match="not one of the bound tools"):
            llm_for_tests().bind_tools([GetWeather], tool_choice="GetTime")
        with pytest.raises(ValueError, match="tool_choice=False is ambiguous"):
            llm_for_tests().bind_tools([GetWeather], tool_choice=False)

    @pytest.mark.parametrize(
        ("choice", "expected"),
        [
            ({"type": "tool", "name": "GetTime"}, "GetTime"),
            ({"type": "any"}, "any"),
            ({"type": "auto"}, None),
            ({"type": "none"}, "none"),
            ({"type": "function", "function": {"name": "GetTime"}}, "GetTime"),
        ],
    )
    def test_dict_tool_choices(self, choice: Any, expected: str | None) -> None:
        bound = llm_for_tests().bind_tools([GetWeather, GetTime], tool_choice=choice)
        assert isinstance(bound, RunnableBinding)
        assert bound.kwargs["tool_choice"] == expected

    @pytest.mark.parametrize("choice", ["any", "required", True])
    def test_forced_tool_choice_without_tools(self, spy: DecoderSpy, choice: Any) -> None:
        with pytest.raises(ValueError, match="needs at least one tool"):
            llm_for_tests().bind_tools([], tool_choice=choice)
        with pytest.raises(ValueError, match="needs at least one tool"):
            llm_for_tests().invoke("hi", tools=[], tool_choice="any")
        assert spy.calls == []

    def test_tool_history_is_rendered(
        self, script: Any, tokenizer: PreTrainedTokenizerFast
    ) -> None:
        decoder = script("It is sunny in Paris.")
        history = [
            HumanMessage("Weather in Paris?"),
            AIMessage(
                "", tool_calls=[{"name": "GetWeather", "args": {"city": "Paris"}, "id": "c1"}]
            ),
            ToolMessage("sunny, 24C", tool_call_id="c1"),
        ]
        message = llm_for_tests().bind_tools([GetWeather]).invoke(history)
        assert message.content == "It is sunny in Paris."
        judge = decode(tokenizer, decoder.calls[0].judge_ids)
        assert "Tool result for GetWeather (id c1): sunny, 24C" in judge
        assert '{"name": "GetWeather", "arguments": {"city": "Paris"}}' in judge

    def test_structured_output(self, script: Any) -> None:
        script(' "Paris"}}\n</tool_call>')
        structured = llm_for_tests().with_structured_output(GetWeather)
        assert structured.invoke("weather in Paris?") == GetWeather(city="Paris")
        raw = llm_for_tests().with_structured_output(GetWeather, include_raw=True).invoke("?")
        assert isinstance(raw, dict)
        assert raw["parsed"] == GetWeather(city="Paris")
        assert isinstance(raw["raw"], AIMessage)

    def test_structured_output_cut_by_max_tokens_raises(self, script: Any) -> None:
        script(' "Ada Lovelace", "age": 36, "hobbies": ["math"]}}\n</tool_call>', eos=False)
        llm = llm_for_tests(max_tokens=12, temperature=0)
        with pytest.raises(OutputParserException) as caught:
            llm.with_structured_output(Big).invoke("Invent a person.")
        message = str(caught.value)
        assert "no valid 'Big' tool call" in message
        assert "raise max_tokens on the ChatPersonaJudge" in message
        assert "not valid JSON" in message
        assert '"name": "Big", "arguments": {"name": "Ada Lovela' in message  # the cut call
        assert caught.value.llm_output is not None and "Ada Lovela" in caught.value.llm_output

        result = llm.with_structured_output(Big, include_raw=True).invoke("Invent a person.")
        assert isinstance(result, dict)
        assert result["parsed"] is None
        assert isinstance(result["parsing_error"], OutputParserException)
        assert "raise max_tokens" in str(result["parsing_error"])
        raw = result["raw"]
        assert raw.response_metadata["finish_reason"] == "length"
        assert [call["name"] for call in raw.invalid_tool_calls] == ["Big"]

        with pytest.raises(OutputParserException, match="raise max_tokens"):
            list(llm.with_structured_output(Big).stream("Invent a person."))
        schema = convert_to_openai_tool(Big)
        with pytest.raises(OutputParserException, match="no valid 'Big' tool call"):
            llm.with_structured_output(schema).invoke("Invent a person.")

    def test_structured_output_without_length_limit_error(self, script: Any) -> None:
        script(' "Ada", "age": }}\n</tool_call>')
        with pytest.raises(OutputParserException) as caught:
            llm_for_tests().with_structured_output(Big).invoke("Invent a person.")
        assert "max_tokens" not in str(caught.value)
        assert "not valid JSON" in str(caught.value)

    def test_structured_output_not_matching_the_schema_raises(self, script: Any) -> None:
        script(" 2}}\n</tool_call>")  # the prefill asks for "name"; the model gives a number
        llm = llm_for_tests()
        with pytest.raises(OutputParserException) as caught:
            llm.with_structured_output(Big).invoke("Invent a person.")
        message = str(caught.value)
        assert "'Big' call does not match the schema" in message
        assert "name: Input should be a valid string" in message
        assert "age: Field required" in message
        assert caught.value.llm_output == '{"name": 2}'
        result = llm.with_structured_output(Big, include_raw=True).invoke("?")
        assert isinstance(result, dict)
        assert result["parsed"] is None
        assert "does not match the schema" in str(result["parsing_error"])

    def test_structured_output_error_clips_long_output(self, script: Any) -> None:
        script(' "' + "ab" * 800, eos=False)
        with pytest.raises(OutputParserException) as caught:
            llm_for_tests(max_tokens=2000).with_structured_output(Big).invoke("?")
        assert "characters ...]" in str(caught.value)
        assert len(str(caught.value)) < 2000
        assert caught.value.llm_output is not None and "ab" * 800 in caught.value.llm_output

    def test_structured_output_with_enough_tokens(self, script: Any) -> None:
        script(' "Ada", "age": 36, "hobbies": ["math"]}}\n</tool_call>')
        llm = llm_for_tests(max_tokens=200)
        assert llm.with_structured_output(Big).invoke("?") == Big(
            name="Ada", age=36, hobbies=["math"]
        )
        as_dict = llm.with_structured_output(convert_to_openai_tool(Big), method="json_schema")
        assert as_dict.invoke("?") == {"name": "Ada", "age": 36, "hobbies": ["math"]}

    def test_json_mode(self, script: Any, tokenizer: PreTrainedTokenizerFast) -> None:
        decoder = script('"city": "Paris"}')
        llm = llm_for_tests()
        assert llm.with_structured_output(None, method="json_mode").invoke("?") == {"city": "Paris"}
        assert decode(tokenizer, decoder.calls[0].judge_ids).endswith("assistant\n{")
        typed = llm.with_structured_output(GetWeather, method="json_mode", include_raw=True)
        result = typed.invoke("?")
        assert isinstance(result, dict)
        assert result["parsed"] == GetWeather(city="Paris")
        assert result["parsing_error"] is None


class TestStandardUnit(ChatModelUnitTests):
    """langchain-tests' standard unit tests (they construct and bind, never load weights)."""

    @property
    def chat_model_class(self) -> type[ChatPersonaJudge]:
        return ChatPersonaJudge

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"judge_preference": "Be brief."}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # A local model has no network client: no timeout / max_retries / api_key settings.
        return {"temperature": 0, "max_tokens": 100, "stop": []}
