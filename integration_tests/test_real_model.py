"""The whole stack on the real default model: decoder, chat model, profile, LCEL, LangGraph."""

from __future__ import annotations

from typing import cast

import torch
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.store.memory import InMemoryStore
from pydantic import BaseModel, Field
from transformers import GenerationMixin

from langchain_persona_judge import ChatPersonaJudge, PersonaProfile, persona_judge_decode
from langchain_persona_judge.loading import LoadedModel

QUESTION = "Why is the sky blue?"
KID = "Explain like I am five years old, with a playful tone."
EXPERT = "Use precise physics terminology, as for a professor."


def chat_ids(smollm: LoadedModel, system: str) -> list[int]:
    text = smollm.tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}],
        add_generation_prompt=True,
        tokenize=False,
    )
    return list(smollm.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_judge_only_greedy_equals_plain_generate(smollm: LoadedModel) -> None:
    # w = 1 and temperature 0: the output must be the judge's own greedy decode, which
    # transformers' generate computes independently.
    draft_ids, judge_ids = chat_ids(smollm, KID), chat_ids(smollm, EXPERT)
    result = persona_judge_decode(
        smollm.model,
        draft_ids,
        smollm.model,
        judge_ids,
        max_new_tokens=24,
        gamma=4,
        judge_weight=1.0,
        temperature=0,
    )
    reference = (
        cast(GenerationMixin, smollm.model)
        .generate(torch.tensor([judge_ids]), max_new_tokens=24, min_new_tokens=24, do_sample=False)[
            0, len(judge_ids) :
        ]
        .tolist()
    )
    assert result.token_ids == reference
    assert result.stats.rejected > 0  # the draft persona really proposed other tokens


def test_cached_and_uncached_sampling_agree_on_real_model(smollm: LoadedModel) -> None:
    draft_ids, judge_ids = chat_ids(smollm, KID), chat_ids(smollm, EXPERT)
    runs = [
        persona_judge_decode(
            smollm.model,
            draft_ids,
            smollm.model,
            judge_ids,
            max_new_tokens=16,
            temperature=0.8,
            top_p=0.9,
            generator=torch.Generator().manual_seed(4),
            use_cache=use_cache,
        )
        for use_cache in (True, False)
    ]
    assert runs[0].token_ids == runs[1].token_ids


def test_invoke_reports_usage_and_statistics() -> None:
    llm = ChatPersonaJudge(draft_preference=KID, judge_preference=EXPERT, max_tokens=24, seed=1)
    message = llm.invoke([SystemMessage("You are a science tutor."), HumanMessage(QUESTION)])
    assert isinstance(message, AIMessage)
    assert message.text.strip()
    usage = message.usage_metadata
    assert usage is not None
    stats = message.response_metadata["persona_judge"]
    assert usage["output_tokens"] == stats["emitted"] <= 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert message.response_metadata["finish_reason"] in {"stop", "length"}
    assert 0.0 <= stats["acceptance_rate"] <= 1.0


def test_stream_matches_invoke_and_ends_with_usage() -> None:
    llm = ChatPersonaJudge(draft_preference=KID, judge_preference=EXPERT, max_tokens=20, seed=7)
    chunks = list(llm.stream(QUESTION))
    assert len(chunks) > 3  # token-level, not one blob
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    last = chunks[-1]
    assert last.chunk_position == "last"
    assert last.usage_metadata is not None
    streamed = "".join(c.text for c in chunks)
    assert streamed == llm.invoke(QUESTION).text  # same seed, same text


async def test_async_invoke_and_stream() -> None:
    llm = ChatPersonaJudge(judge_preference=EXPERT, max_tokens=12, seed=3)
    message = await llm.ainvoke(QUESTION)
    chunks = [chunk async for chunk in llm.astream(QUESTION)]
    assert "".join(c.text for c in chunks) == message.text


def test_stop_sequence_cuts_the_answer() -> None:
    llm = ChatPersonaJudge(temperature=0, max_tokens=40)
    full = llm.invoke("Count from 1 to 10, separated by commas.").text
    assert "5" in full, full  # the premise of the test
    cut = llm.invoke("Count from 1 to 10, separated by commas.", stop=["5"])
    assert cut.text == full[: full.index("5")]
    assert cut.response_metadata["finish_reason"] == "stop"


def test_preferences_change_the_answer() -> None:
    llm = ChatPersonaJudge(temperature=0, max_tokens=32, judge_weight=0.5)
    kid = llm.invoke(QUESTION, draft_preference=KID, judge_preference=KID).text
    expert = llm.invoke(QUESTION, draft_preference=EXPERT, judge_preference=EXPERT).text
    assert kid != expert


def test_lcel_chain() -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a concise assistant."), ("human", "{question}")]
    )
    chain = prompt | ChatPersonaJudge(max_tokens=16, seed=0) | StrOutputParser()
    answer = chain.invoke({"question": QUESTION})
    assert isinstance(answer, str) and answer.strip()


def test_profile_with_store_and_user_id_in_config() -> None:
    store = InMemoryStore()
    profile = PersonaProfile(store=store)
    store.put(profile.namespace_for("ana.silva"), "1", {"text": "Prefers a playful tone"})
    store.put(profile.namespace_for("ana.silva"), "2", {"text": "Is a physics professor"})
    config: RunnableConfig = {"configurable": {"user_id": "ana.silva"}}
    preferences = profile.invoke(None, config)
    assert not preferences.is_neutral
    assert "playful" in preferences.draft_preference
    assert "physics professor" in preferences.judge_preference

    chat = profile.personalize(ChatPersonaJudge(max_tokens=16, seed=0))
    reply = chat.invoke(QUESTION, config)
    assert reply.text.strip()
    assert reply.response_metadata["persona"]["judge_preference"] == preferences.judge_preference

    unknown = chat.invoke(QUESTION, {"configurable": {"user_id": "nobody"}})
    assert unknown.response_metadata["persona"]["is_neutral"] is True


def test_langgraph_node_with_graph_store() -> None:
    store = InMemoryStore()
    profile = PersonaProfile()
    store.put(profile.namespace_for("kim"), "1", {"text": "Prefers short answers"})
    builder = StateGraph(MessagesState)
    builder.add_node("chat", profile.personalize(ChatPersonaJudge(max_tokens=16, seed=0)))
    builder.add_edge(START, "chat")
    graph = builder.compile(store=store)
    state = graph.invoke(
        {"messages": [("human", QUESTION)]},  # type: ignore[call-overload]  # tuples are messages
        {"configurable": {"user_id": "kim"}},
    )
    reply = state["messages"][-1]
    assert isinstance(reply, AIMessage) and reply.text.strip()
    assert "short answers" in reply.response_metadata["persona"]["draft_preference"]


def test_research_reproduction_mode_runs_end_to_end() -> None:
    llm = ChatPersonaJudge(
        draft_preference=KID,
        judge_preference=EXPERT,
        reproduce_research_code=True,
        temperature=0.9,
        top_k=20,
        top_p=0.9,
        max_tokens=12,
        seed=0,
    )
    message = llm.invoke(QUESTION)
    assert message.response_metadata["persona_judge"]["emitted"] == 12  # EOS is ignored


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(description="The city, e.g. Paris")


class GetTime(BaseModel):
    """Get the current time in a time zone."""

    zone: str = Field(description="The time zone, e.g. CET")


def test_forced_tool_call_and_structured_output() -> None:
    # The forced prefill makes even the 135M model answer with a parseable call.
    llm = ChatPersonaJudge(temperature=0, max_tokens=32)
    message = llm.bind_tools([GetWeather], tool_choice="GetWeather").invoke(
        "What is the weather like in Paris?"
    )
    assert isinstance(message, AIMessage)
    assert [call["name"] for call in message.tool_calls] == ["GetWeather"]
    assert "paris" in message.tool_calls[0]["args"]["city"].lower()
    assert message.response_metadata["finish_reason"] == "stop"  # ended with the block
    weather = llm.with_structured_output(GetWeather).invoke("What is the weather in Rome?")
    assert isinstance(weather, GetWeather)
    assert "rome" in weather.city.lower()
    # "any" over several tools: exactly one call, always of an offered tool.
    several = llm.bind_tools([GetWeather, GetTime], tool_choice="any")
    for question in ("What is the weather in Oslo?", "What time is it in Tokyo?"):
        reply = several.invoke(question)
        assert isinstance(reply, AIMessage)
        names = [c["name"] for c in [*reply.tool_calls, *reply.invalid_tool_calls]]
        assert len(names) == 1 and names[0] in {"GetWeather", "GetTime"}
    personalized = PersonaProfile(memories=["Prefers short answers"]).personalize(llm)
    weather = personalized.with_structured_output(GetWeather).invoke("Weather in Oslo?")
    assert isinstance(weather, GetWeather)
    assert "oslo" in weather.city.lower()
