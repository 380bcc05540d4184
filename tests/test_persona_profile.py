"""PersonaProfile: memories -> draft/judge preferences, and personalized chat runnables."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from functools import reduce
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.store.memory import InMemoryStore
from pydantic import BaseModel, Field, ValidationError

from langchain_persona_judge.persona_profile import (
    NEUTRAL_DRAFT,
    NEUTRAL_JUDGE,
    Memory,
    PersonaPreferences,
    PersonaProfile,
    classify_memory,
    decode_user_id,
    default_mapper,
    encode_user_id,
)

DRAFT = "Respond in the style this user prefers: "
JUDGE = "Make sure the response is appropriate and correct for this user: "


class RecordingChat(BaseChatModel):
    """Fake chat model: records the messages and kwargs of each call, answers "Hello there!"."""

    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append({"messages": messages, **kwargs})
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="Hello there!"))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.calls.append({"messages": messages, **kwargs})
        for piece in ("Hello", " there", "!"):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))


def user_config(user_id: str) -> RunnableConfig:
    return {"configurable": {"user_id": user_id}}


@pytest.fixture
def store() -> InMemoryStore:
    """Alice has style and judge memories; Jane's id contains dots."""
    store = InMemoryStore()
    alice = ("users", "alice", "memories")
    store.put(alice, "1", {"text": "Prefers concise answers"})
    store.put(alice, "2", {"content": "Is a vegetarian."})
    jane = ("users", "jane%2Edoe@example%2Ecom", "memories")
    store.put(jane, "1", {"memory": "Likes a witty tone"})
    return store


# ----------------------------------------------------------------- default mapping


def test_direct_memories_map_to_exact_sentences() -> None:
    profile = PersonaProfile(
        memories=[
            "Prefers concise answers",
            "Likes a friendly, witty tone.",
            "Is a vegetarian",
            "Works as a data scientist",
            "prefers  concise answers.",  # duplicate: case, spaces and final "." ignored
        ]
    )
    prefs = profile.invoke(None)
    assert (
        prefs.draft_preference == DRAFT + "Prefers concise answers; Likes a friendly, witty tone."
    )
    assert prefs.judge_preference == JUDGE + "Is a vegetarian; Works as a data scientist."
    assert prefs.memories == [
        "Prefers concise answers",
        "Likes a friendly, witty tone.",
        "Is a vegetarian",
        "Works as a data scientist",
    ]
    assert (prefs.source, prefs.is_neutral, prefs.note, prefs.user_id) == (
        "memories",
        False,
        None,
        None,
    )
    assert prefs.as_model_kwargs() == {
        "draft_preference": prefs.draft_preference,
        "judge_preference": prefs.judge_preference,
    }


def test_classification_rules() -> None:
    # both kinds of category -> both preferences; whole words only; plural "s" allowed
    assert classify_memory(Memory(text="Explain like a beginner, in bullets")) == (
        "format",
        "expertise",
    )
    assert classify_memory(Memory(text="Loves keyboard shortcuts")) == ()
    assert classify_memory(Memory(text="Hates emojis")) == ("style",)
    # an explicit known kind wins; an unknown kind (LangMem's "Memory") is ignored
    assert classify_memory(Memory(text="Likes a witty tone", kind="Judge")) == ("judge",)
    assert classify_memory(Memory(text="Loves jazz", kind=" STYLE ")) == ("style",)
    assert classify_memory(Memory(text="Likes a witty tone", kind="Memory")) == ("tone",)

    draft, judge = default_mapper(
        [
            Memory(text="Explain like a beginner, in bullets"),
            Memory(text="Loves keyboard shortcuts"),
        ]
    )
    assert draft == DRAFT + "Explain like a beginner, in bullets."
    assert judge == JUDGE + "Explain like a beginner, in bullets; Loves keyboard shortcuts."


def test_only_one_side_known_keeps_the_other_neutral() -> None:
    prefs = PersonaProfile(memories=["Short answers please"]).invoke(None)
    assert prefs.draft_preference == DRAFT + "Short answers please."
    assert prefs.judge_preference == NEUTRAL_JUDGE
    assert not prefs.is_neutral


# ----------------------------------------------------------------- stores


def test_kind_tagged_and_common_store_value_shapes() -> None:
    store = InMemoryStore()
    ns = ("users", "kim", "memories")
    store.put(ns, "a", {"kind": "style", "text": "Loves jazz"})
    store.put(ns, "b", {"kind": "judge", "text": "Likes a witty tone"})
    store.put(ns, "c", {"kind": "Memory", "content": {"content": "Is vegan"}})  # LangMem
    store.put(ns, "d", {"value": "Answers in French"})
    store.put(ns, "e", {"embedding": [0.1, 0.2]})  # no text: skipped, with a note
    prefs = PersonaProfile(store=store).invoke("kim")
    assert prefs.source == "store"
    assert prefs.draft_preference == DRAFT + "Loves jazz; Answers in French."
    assert prefs.judge_preference == JUDGE + "Likes a witty tone; Is vegan."
    assert prefs.note is not None and "Skipped 1 store item(s)" in prefs.note
    assert "['e']" in prefs.note


def test_store_user_id_from_config_and_from_input(store: InMemoryStore) -> None:
    profile = PersonaProfile(store=store)
    from_config = profile.invoke(None, user_config("alice"))
    from_str = profile.invoke("alice")
    from_dict = profile.invoke({"user_id": "alice", "question": "ignored"}, user_config("bob"))
    for prefs in (from_config, from_str, from_dict):
        assert prefs.user_id == "alice"
        assert prefs.namespace == ("users", "alice", "memories")
        assert prefs.draft_preference == DRAFT + "Prefers concise answers."
        assert prefs.judge_preference == JUDGE + "Is a vegetarian."
        assert prefs.note is None


def test_user_id_with_dots_is_encoded(store: InMemoryStore) -> None:
    user = "jane.doe@example.com"
    assert encode_user_id(user) == "jane%2Edoe@example%2Ecom"
    for tricky in (user, "a%2Eb", "a.b", "100%", "nul\x00byte"):
        assert decode_user_id(encode_user_id(tricky)) == tricky
    assert encode_user_id("a.b") != encode_user_id("a%2Eb")

    prefs = PersonaProfile(store=store).invoke(None, user_config(user))
    assert prefs.user_id == user
    assert prefs.namespace == ("users", "jane%2Edoe@example%2Ecom", "memories")
    assert prefs.draft_preference == DRAFT + "Likes a witty tone."


def test_custom_namespace_prefix() -> None:
    store = InMemoryStore()
    store.put(("memories", "alice"), "1", {"text": "Is a nurse"})
    profile = PersonaProfile(store=store, namespace=("memories", "{user_id}"))
    assert profile.invoke("alice").judge_preference == JUDGE + "Is a nurse."


def test_unknown_user_and_no_user_get_neutral_with_note(store: InMemoryStore) -> None:
    unknown = PersonaProfile(store=store).invoke("bob")
    assert (unknown.draft_preference, unknown.judge_preference) == (NEUTRAL_DRAFT, NEUTRAL_JUDGE)
    assert unknown.is_neutral and unknown.source == "neutral" and unknown.memories == []
    assert unknown.note == (
        "No memories found for user 'bob' in namespace ('users', 'bob', 'memories'). "
        "Nothing is known about the user; using neutral preferences."
    )

    nobody = PersonaProfile(store=store).invoke(None)
    assert nobody.is_neutral and nobody.user_id is None and nobody.namespace is None
    assert nobody.note is not None and "No user id given" in nobody.note

    no_store = PersonaProfile().invoke("bob")
    assert no_store.is_neutral
    assert no_store.note is not None and "No store to look up user 'bob'" in no_store.note


def test_given_and_stored_memories_combine_in_order(store: InMemoryStore) -> None:
    profile = PersonaProfile(store=store, memories=["Is a nurse"])
    prefs = profile.invoke({"user_id": "alice", "memories": [{"kind": "tone", "text": "Warm"}]})
    assert prefs.source == "memories+store"
    assert prefs.memories == ["Is a nurse", "Warm", "Prefers concise answers", "Is a vegetarian."]
    assert prefs.draft_preference == DRAFT + "Warm; Prefers concise answers."
    assert prefs.judge_preference == JUDGE + "Is a nurse; Is a vegetarian."


def test_search_limit_reached_is_noted() -> None:
    store = InMemoryStore()
    for i in range(3):
        store.put(("users", "u", "memories"), str(i), {"text": f"Fact {i}"})
    full = PersonaProfile(store=store, search_limit=3).invoke("u")
    assert full.note is not None and "more may exist" in full.note
    assert len(full.memories) == 3
    roomy = PersonaProfile(store=store, search_limit=4).invoke("u")
    assert roomy.note is None


async def test_ainvoke_reads_the_store_asynchronously(store: InMemoryStore) -> None:
    prefs = await PersonaProfile(store=store).ainvoke(None, user_config("alice"))
    assert prefs == PersonaProfile(store=store).invoke("alice")
    assert prefs.memories == ["Prefers concise answers", "Is a vegetarian."]


# ----------------------------------------------------------------- overriding the mapping


def test_mapper_parameter_and_subclass_override() -> None:
    seen: list[list[Memory]] = []

    def mapper(memories: list[Memory]) -> tuple[str, str]:
        seen.append(memories)
        return "", " / ".join(m.text for m in memories)

    prefs = PersonaProfile(memories=["a", "b"], mapper=mapper).invoke(None)
    assert seen == [[Memory(text="a"), Memory(text="b")]]
    assert prefs.draft_preference == NEUTRAL_DRAFT  # "" -> neutral
    assert prefs.judge_preference == "a / b"

    class Shouty(PersonaProfile):
        def map_memories(self, memories: list[Memory]) -> tuple[str, str]:
            return "LOUD", memories[0].text.upper()

    assert Shouty(memories=["x"]).invoke(None).as_model_kwargs() == {
        "draft_preference": "LOUD",
        "judge_preference": "X",
    }

    bad = PersonaProfile(memories=["a"], mapper=lambda ms: ("only one", None))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"mapper must return \(draft: str, judge: str\)"):
        bad.invoke(None)


# ----------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors() -> None:
    profile = PersonaProfile()
    with pytest.raises(TypeError, match="must be None, a user id str, or a dict"):
        profile.invoke(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"user_id must be a str, got int 7; pass str\(user_id\)"):
        profile.invoke({"user_id": 7})
    with pytest.raises(TypeError, match="user_id must be a str"):
        profile.invoke(None, {"configurable": {"user_id": 7}})
    with pytest.raises(ValueError, match="empty string"):
        profile.invoke("")
    with pytest.raises(TypeError, match="wrap a single memory in a list"):
        profile.invoke({"memories": "Likes tea"})
    with pytest.raises(TypeError, match=r"bad item in input\['memories'\]: a memory must be"):
        profile.invoke({"memories": [123]})
    with pytest.raises(ValueError, match="memory text is empty"):
        profile.invoke({"memories": ["  "]})
    with pytest.raises(TypeError, match="no text under any of the keys"):
        PersonaProfile(memories=[{"note": "x"}])
    with pytest.raises(ValidationError, match="exactly once"):
        PersonaProfile(namespace=("users", "memories"))
    with pytest.raises(TypeError, match="takes no keyword arguments"):
        profile.invoke("alice", stop=["x"])
    with pytest.raises(ValueError, match="needs a 'messages' key"):
        profile.personalize(RecordingChat()).invoke({"question": "hi"})


# ----------------------------------------------------------------- personalized chat


def test_personalize_in_an_lcel_chain(store: InMemoryStore) -> None:
    chat = RecordingChat()
    prompt = ChatPromptTemplate.from_messages([("system", "Be nice."), ("human", "{question}")])
    chain = prompt | PersonaProfile(store=store).personalize(chat)

    reply = chain.invoke({"question": "Dinner ideas?"}, user_config("alice"))

    assert isinstance(reply, AIMessage) and reply.content == "Hello there!"
    (call,) = chat.calls
    assert [m.content for m in call["messages"]] == ["Be nice.", "Dinner ideas?"]
    assert call["draft_preference"] == DRAFT + "Prefers concise answers."
    assert call["judge_preference"] == JUDGE + "Is a vegetarian."
    persona = PersonaPreferences.model_validate(reply.response_metadata["persona"])
    assert persona.user_id == "alice" and persona.memories[0] == "Prefers concise answers"


def test_personalize_plain_inputs_and_explicit_kwargs_win() -> None:
    chat = RecordingChat()
    personalized = PersonaProfile(memories=["Is a nurse"]).personalize(chat)
    personalized.invoke("hi")
    personalized.invoke([HumanMessage("hi")], judge_preference="override")
    assert [c["judge_preference"] for c in chat.calls] == [JUDGE + "Is a nurse.", "override"]
    assert chat.calls[1]["draft_preference"] == NEUTRAL_DRAFT


class Reply(BaseModel):
    text: str


class ToolRecordingChat(RecordingChat):
    """RecordingChat with tool binding (records the tool names) and structured output."""

    def bind_tools(  # type: ignore[override]
        self, tools: Any, **kwargs: Any
    ) -> Runnable[Any, BaseMessage]:
        return self.bind(tools=[tool.__name__ for tool in tools], **kwargs)

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Runnable[Any, Any]:
        return self | RunnableLambda(lambda message: schema(text=message.text))


def test_personalized_tools_and_structured_output() -> None:
    chat = ToolRecordingChat()
    personalized = PersonaProfile(memories=["Is a nurse"]).personalize(chat)
    with_tools = personalized.bind_tools([Reply], tool_choice="any")
    reply = with_tools.invoke("hi")
    assert chat.calls[-1]["tools"] == ["Reply"] and chat.calls[-1]["tool_choice"] == "any"
    assert chat.calls[-1]["judge_preference"] == JUDGE + "Is a nurse."
    assert reply.response_metadata["persona"]["judge_preference"] == JUDGE + "Is a nurse."

    for structured in (
        personalized.with_structured_output(Reply),
        PersonaProfile(memories=["Is a nurse"]).personalize(chat.with_structured_output(Reply)),
    ):
        assert structured.invoke("hi") == Reply(text="Hello there!")
        assert chat.calls[-1]["judge_preference"] == JUDGE + "Is a nurse."
        assert list(structured.stream("hi")) == [Reply(text="Hello there!")]
        with pytest.raises(TypeError, match="must return messages, but it returned Reply"):
            structured.invoke({"messages": ["hi"]})

    no_tools = PersonaProfile().personalize(RunnableLambda(lambda _: AIMessage("x")))
    with pytest.raises(AttributeError, match=r"RunnableLambda has no bind_tools\(\)"):
        no_tools.bind_tools([Reply])


def test_metadata_reports_the_preferences_used() -> None:
    chat = RecordingChat()
    personalized = PersonaProfile(memories=["Is a nurse"]).personalize(chat)

    plain = personalized.invoke("hi")
    assert isinstance(plain, BaseMessage)
    assert plain.response_metadata["persona"]["judge_preference"] == JUDGE + "Is a nurse."
    assert plain.response_metadata["persona"]["overridden"] == []

    reply = personalized.invoke("hi", judge_preference="override")
    assert isinstance(reply, BaseMessage)
    persona = reply.response_metadata["persona"]
    assert persona["judge_preference"] == chat.calls[-1]["judge_preference"] == "override"
    assert persona["draft_preference"] == chat.calls[-1]["draft_preference"] == NEUTRAL_DRAFT
    assert persona["overridden"] == ["judge_preference"]
    assert persona["memories"] == ["Is a nurse"]
    assert PersonaPreferences.model_validate(persona).judge_preference == "override"

    chunks = list(personalized.stream("hi", draft_preference="Be terse."))
    first = chunks[0]
    assert isinstance(first, BaseMessage)
    assert first.response_metadata["persona"]["draft_preference"] == "Be terse."
    assert first.response_metadata["persona"]["overridden"] == ["draft_preference"]
    assert chat.calls[-1]["draft_preference"] == "Be terse."


async def test_async_metadata_reports_the_preferences_used() -> None:
    personalized = PersonaProfile(memories=["Is a nurse"]).personalize(RecordingChat())
    reply = await personalized.ainvoke({"messages": ["hi"]}, judge_preference="override")
    assert isinstance(reply, dict)
    persona = reply["messages"][0].response_metadata["persona"]
    assert (persona["judge_preference"], persona["overridden"]) == (
        "override",
        ["judge_preference"],
    )
    chunks = [c async for c in personalized.astream("hi", judge_preference="other")]
    first = chunks[0]
    assert isinstance(first, BaseMessage)
    assert first.response_metadata["persona"]["judge_preference"] == "other"


def test_graph_store_is_not_required_outside_graphs() -> None:
    chat = RecordingChat()
    chain = RunnableLambda(lambda text: text) | PersonaProfile().personalize(chat)
    reply = chain.invoke("hi", user_config("alice"))
    assert isinstance(reply, BaseMessage)
    assert "No store to look up user 'alice'" in reply.response_metadata["persona"]["note"]


def test_personalize_streams_the_chat_model_chunks() -> None:
    chat = RecordingChat()
    personalized = PersonaProfile(memories=["Concise"]).personalize(chat)

    chunks = [c for c in personalized.stream("hi") if isinstance(c, AIMessageChunk)]
    # langchain-core ends a model stream with an empty "last" chunk
    assert [c.content for c in chunks] == ["Hello", " there", "!", ""]
    assert "persona" in chunks[0].response_metadata
    assert all("persona" not in c.response_metadata for c in chunks[1:])
    assert chat.calls[0]["draft_preference"] == DRAFT + "Concise."

    # dict (MessagesState) input: {"messages": [chunk]} updates that add up to one reply
    updates: list[Any] = list(personalized.stream({"messages": [HumanMessage("hi")]}))
    assert len(updates) == 4 and all(list(u) == ["messages"] for u in updates)
    total = reduce(operator.add, updates)
    assert total["messages"][0].content == "Hello there!"
    assert total["messages"][0].response_metadata["persona"]["memories"] == ["Concise"]


async def test_personalize_async_invoke_and_stream(store: InMemoryStore) -> None:
    chat = RecordingChat()
    personalized = PersonaProfile(store=store).personalize(chat)
    reply = await personalized.ainvoke("hi", user_config("alice"))
    assert isinstance(reply, AIMessage) and reply.content == "Hello there!"
    chunks = [c async for c in personalized.astream("hi", user_config("alice"))]
    assert [c.content for c in chunks if isinstance(c, AIMessageChunk)] == [
        "Hello",
        " there",
        "!",
        "",
    ]
    assert [c["draft_preference"] for c in chat.calls] == [DRAFT + "Prefers concise answers."] * 2


def _graph(chat: RecordingChat, store: InMemoryStore) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("chat", PersonaProfile().personalize(chat))  # no store: uses the graph's
    builder.add_edge(START, "chat")
    return builder.compile(store=store)


def test_personalize_as_a_langgraph_node_with_the_graphs_store(store: InMemoryStore) -> None:
    chat = RecordingChat()
    graph = _graph(chat, store)

    state = graph.invoke({"messages": [("human", "Dinner ideas?")]}, user_config("alice"))

    assert [m.content for m in state["messages"]] == ["Dinner ideas?", "Hello there!"]
    assert state["messages"][-1].response_metadata["persona"]["user_id"] == "alice"
    assert chat.calls[0]["draft_preference"] == DRAFT + "Prefers concise answers."
    assert chat.calls[0]["judge_preference"] == JUDGE + "Is a vegetarian."

    # the user id can also live in the graph state
    class UserState(MessagesState):
        user_id: str

    builder = StateGraph(UserState)
    builder.add_node("chat", PersonaProfile().personalize(chat))
    builder.add_edge(START, "chat")
    graph = builder.compile(store=store)
    graph.invoke({"messages": [HumanMessage("Hi")], "user_id": "jane.doe@example.com"})
    assert chat.calls[-1]["draft_preference"] == DRAFT + "Likes a witty tone."


async def test_personalize_as_an_async_langgraph_node(store: InMemoryStore) -> None:
    chat = RecordingChat()
    state = await _graph(chat, store).ainvoke({"messages": [("human", "Hi")]}, user_config("alice"))
    assert state["messages"][-1].content == "Hello there!"
    assert chat.calls[0]["judge_preference"] == JUDGE + "Is a vegetarian."
