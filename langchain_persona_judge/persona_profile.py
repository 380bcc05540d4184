"""Turn what is known about a user into the two preferences Persona-judge decodes with.

Persona-judge decoding needs two natural-language preferences: the **draft**
preference conditions the copy of the model that proposes tokens, the **judge**
preference conditions the copy that accepts or rejects them.
:class:`PersonaProfile` is a LangChain ``Runnable`` that builds both from a user's
memories and returns a :class:`PersonaPreferences`; :meth:`PersonaProfile.personalize`
wraps a chat model so every call is decoded with the calling user's preferences.

Where memories come from (all are combined, in this order, duplicates dropped):

1. ``PersonaProfile(memories=[...])``: memories that apply to every call;
2. ``"memories"`` in the input dict: memories for this call only;
3. a LangGraph ``BaseStore``: every item under the namespace
   ``("users", <user id>, "memories")`` (the ``namespace`` field; ``"{user_id}"``
   marks the label that holds the user id). The store is ``PersonaProfile(store=...)``
   or, when none was given and the profile runs inside a LangGraph graph, the graph's
   own store (``graph.compile(store=...)``, found with ``langgraph.config.get_store``).

A memory is a plain string, a :class:`Memory`, or a dict in one of the shapes that
memory tools commonly write (store item values are such dicts):

* ``{"text": "..."}``, ``{"content": "..."}``, ``{"memory": "..."}`` or
  ``{"value": "..."}`` (the first of these keys that holds text is used);
* any of them plus ``"kind"``, e.g. ``{"kind": "style", "text": "Short answers"}``;
* a dict nested under one of those keys, e.g. LangMem's
  ``{"kind": "Memory", "content": {"content": "..."}}``.

The user id is taken from the input (a string, or ``"user_id"`` in a dict) and
otherwise from ``config["configurable"]["user_id"]``. LangGraph stores reject
namespace labels that contain ``"."`` (or NUL, or are empty), so the id is
percent-encoded in the namespace: ``"%"`` -> ``"%25"``, ``"."`` -> ``"%2E"``,
NUL -> ``"%00"`` (see :func:`encode_user_id` and :func:`decode_user_id`); ids
without those characters are used unchanged.

How memories become the two preferences (:func:`default_mapper`, overridable with
``PersonaProfile(mapper=...)`` or by overriding :meth:`PersonaProfile.map_memories`):
each memory is sorted by :func:`classify_memory` into categories. Style, tone,
format, length and language (*how to say it*) go to the draft preference; values,
safety, expertise, domain, dietary needs and anything unclassified (*what is
appropriate and correct for this user*) go to the judge preference. A memory that
matches both kinds goes to both. With nothing known about the user, the neutral
preferences :data:`NEUTRAL_DRAFT` and :data:`NEUTRAL_JUDGE` are used and the result
says so (``is_neutral`` and ``note``).

Example:
    ```python
    from langgraph.store.memory import InMemoryStore
    from langchain_persona_judge.persona_profile import PersonaProfile

    store = InMemoryStore()
    store.put(("users", "alice", "memories"), "1", {"text": "Prefers concise answers"})
    store.put(("users", "alice", "memories"), "2", {"text": "Is vegetarian"})
    profile = PersonaProfile(store=store)

    prefs = profile.invoke("alice")
    prefs.draft_preference
    # 'Respond in the style this user prefers: Prefers concise answers.'
    prefs.judge_preference
    # 'Make sure the response is appropriate and correct for this user: Is vegetarian.'

    chat = profile.personalize(ChatPersonaJudge(...))
    chat.invoke("Suggest a dinner.", {"configurable": {"user_id": "alice"}})
    ```
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, cast, runtime_checkable
from urllib.parse import unquote

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import override

__all__ = [
    "DRAFT_CATEGORIES",
    "DRAFT_TEMPLATE",
    "JUDGE_CATEGORIES",
    "JUDGE_TEMPLATE",
    "NEUTRAL_DRAFT",
    "NEUTRAL_JUDGE",
    "Memory",
    "MemoryLike",
    "MemoryStore",
    "PersonaPreferences",
    "PersonaProfile",
    "PersonalizedChat",
    "StoreItem",
    "classify_memory",
    "decode_user_id",
    "default_mapper",
    "encode_user_id",
    "split_memories",
]

NEUTRAL_DRAFT = "Answer helpfully and clearly."
"""Draft preference used when nothing about the user's style is known."""

NEUTRAL_JUDGE = "Be accurate, safe and helpful."
"""Judge preference used when nothing about what suits the user is known."""

DRAFT_TEMPLATE = "Respond in the style this user prefers: {items}."
"""Sentence :func:`default_mapper` builds the draft preference from."""

JUDGE_TEMPLATE = "Make sure the response is appropriate and correct for this user: {items}."
"""Sentence :func:`default_mapper` builds the judge preference from."""

DRAFT_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "style": (
        "style", "casual", "formal", "informal", "jargon", "emoji", "analogy", "analogies",
        "example", "metaphor", "storytelling",
    ),
    "tone": (
        "tone", "friendly", "warm", "polite", "witty", "wit", "humor", "humour", "humorous",
        "funny", "joke", "playful", "serious", "enthusiastic", "empathetic", "sarcasm",
        "sarcastic", "encouraging", "blunt",
    ),
    "format": (
        "format", "formatting", "formatted", "markdown", "bullet", "bullet point", "list",
        "table", "heading", "header", "code block", "numbered", "json", "step by step",
        "step-by-step", "outline", "paragraph",
    ),
    "length": (
        "concise", "brief", "short", "shorter", "long", "longer", "lengthy", "length",
        "detailed", "verbose", "succinct", "terse", "summary", "summaries", "word", "sentence",
    ),
    "language": (
        "language", "english", "french", "spanish", "german", "italian", "portuguese", "dutch",
        "chinese", "mandarin", "japanese", "korean", "russian", "arabic", "hindi", "spelling",
    ),
}  # fmt: skip
"""Draft ("how to say it") categories and the words that put a memory in them."""

JUDGE_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "values": (
        "value", "ethic", "ethical", "moral", "religion", "religious", "faith", "privacy",
        "honest", "honesty", "environment", "environmental", "sustainable", "sustainability",
        "political", "politics", "bias",
    ),
    "safety": (
        "safe", "safety", "harm", "harmful", "allergy", "allergies", "allergic", "medical",
        "medication", "health", "pregnant", "pregnancy", "child", "children", "kid",
        "violence", "violent", "sensitive", "trigger", "risk",
    ),
    "expertise": (
        "expert", "expertise", "beginner", "novice", "newbie", "student", "professional", "phd",
        "engineer", "developer", "programmer", "doctor", "nurse", "lawyer", "scientist",
        "teacher", "experience", "experienced", "level", "advanced", "intermediate",
        "background", "knowledge", "familiar",
    ),
    "domain": (
        "domain", "field", "industry", "work", "job", "career", "research", "researcher",
        "project", "company", "studies", "studying", "major",
    ),
    "dietary": (
        "diet", "dietary", "vegetarian", "vegan", "gluten", "halal", "kosher", "lactose",
        "dairy", "keto", "pescatarian", "nut",
    ),
}  # fmt: skip
"""Judge ("what is appropriate and correct") categories and their words."""

_TEXT_KEYS = ("text", "content", "memory", "value")
_ROLE_KINDS = ("draft", "judge")
_USER_ID_LABEL = "{user_id}"


def _keyword_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Whole words or phrases, case-insensitive, with an optional plural ``s``/``es``."""
    alternatives = "|".join(re.escape(word) for word in words)
    return re.compile(rf"\b(?:{alternatives})(?:s|es)?\b", re.IGNORECASE)


_CATEGORY_PATTERNS: dict[str, re.Pattern[str]] = {
    name: _keyword_pattern(words)
    for name, words in (*DRAFT_CATEGORIES.items(), *JUDGE_CATEGORIES.items())
}


# --------------------------------------------------------------------------- memories


class Memory(BaseModel):
    """One thing known about the user.

    ``text`` has its whitespace collapsed. ``kind`` (lower-cased) optionally says
    where the memory belongs: ``"draft"``, ``"judge"`` or a category name from
    :data:`DRAFT_CATEGORIES` / :data:`JUDGE_CATEGORIES`; :func:`classify_memory`
    ignores other kinds (e.g. LangMem's ``"Memory"``) and classifies by keywords.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    kind: str | None = None

    @field_validator("text")
    @classmethod
    def _collapse_whitespace(cls, text: str) -> str:
        text = " ".join(text.split())
        if not text:
            raise ValueError("memory text is empty")
        return text

    @field_validator("kind")
    @classmethod
    def _normalize_kind(cls, kind: str | None) -> str | None:
        if kind is None:
            return None
        return kind.strip().lower() or None

    @classmethod
    def from_value(cls, value: object) -> Memory:
        """Build a memory from a string, a :class:`Memory` or a dict (shapes in the
        module docstring).

        Raises:
            TypeError: ``value`` has no recognized shape.
            ValueError: its text is empty.
        """
        if isinstance(value, Memory):
            return value
        if isinstance(value, str):
            return cls(text=value)
        if isinstance(value, Mapping):
            kind = value.get("kind")
            for key in _TEXT_KEYS:
                inner = value.get(key)
                if isinstance(inner, str):
                    return cls(text=inner, kind=kind if isinstance(kind, str) else None)
                if isinstance(inner, Mapping):
                    nested = cls.from_value(inner)
                    if nested.kind is None and isinstance(kind, str):
                        return cls(text=nested.text, kind=kind)
                    return nested
            raise TypeError(
                f"memory dict has no text under any of the keys {list(_TEXT_KEYS)} "
                f"(got keys {sorted(map(str, value))}); use e.g. {{'text': 'Prefers short "
                "answers'}, optionally with 'kind'"
            )
        raise TypeError(
            f"a memory must be a str, a Memory or a dict like {{'text': ...}}, "
            f"got {type(value).__name__}: {value!r}"
        )


MemoryLike = str | Memory | Mapping[str, Any]
"""What a memory may be given as: text, a :class:`Memory`, or a dict (see module doc)."""


def classify_memory(memory: Memory) -> tuple[str, ...]:
    """Categories of ``memory``, draft categories first, each in table order.

    An explicit ``kind`` that is ``"draft"``, ``"judge"`` or a known category wins;
    otherwise the categories whose words (:data:`DRAFT_CATEGORIES`,
    :data:`JUDGE_CATEGORIES`; whole words, case-insensitive, plural ``s``/``es``
    allowed) occur in the text. ``()`` means unclassified.

    >>> classify_memory(Memory(text="Likes a friendly tone and bullet points"))
    ('tone', 'format')
    >>> classify_memory(Memory(text="Loves jazz", kind="style"))
    ('style',)
    """
    if memory.kind in _ROLE_KINDS or memory.kind in _CATEGORY_PATTERNS:
        return (memory.kind,)
    return tuple(
        name for name, pattern in _CATEGORY_PATTERNS.items() if pattern.search(memory.text)
    )


def split_memories(memories: Sequence[Memory]) -> tuple[list[Memory], list[Memory]]:
    """Split memories into ``(draft, judge)`` lists, keeping their order.

    A memory goes to the draft when one of its categories (:func:`classify_memory`)
    is ``"draft"`` or a draft category, to the judge when one is ``"judge"`` or a
    judge category, to both when both hold, and to the judge when it has none.
    """
    draft: list[Memory] = []
    judge: list[Memory] = []
    for memory in memories:
        categories = classify_memory(memory)
        to_draft = any(c == "draft" or c in DRAFT_CATEGORIES for c in categories)
        if to_draft:
            draft.append(memory)
        if not to_draft or any(c == "judge" or c in JUDGE_CATEGORIES for c in categories):
            judge.append(memory)
    return draft, judge


def _sentence(template: str, memories: list[Memory]) -> str:
    if not memories:
        return ""
    return template.format(items="; ".join(m.text.rstrip(" .;,") for m in memories))


def default_mapper(memories: list[Memory]) -> tuple[str, str]:
    """Default memory -> ``(draft_preference, judge_preference)`` mapping.

    Splits the memories with :func:`split_memories` and lists each side's texts
    (trailing ``.;,`` dropped, joined by ``"; "``) in :data:`DRAFT_TEMPLATE` /
    :data:`JUDGE_TEMPLATE`. A side with no memories is ``""``, which
    :class:`PersonaProfile` replaces with its neutral preference.

    >>> draft, judge = default_mapper([Memory(text="Concise answers."), Memory(text="Is a nurse")])
    >>> draft
    'Respond in the style this user prefers: Concise answers.'
    >>> judge
    'Make sure the response is appropriate and correct for this user: Is a nurse.'
    """
    draft, judge = split_memories(memories)
    return _sentence(DRAFT_TEMPLATE, draft), _sentence(JUDGE_TEMPLATE, judge)


def _dedupe(memories: list[Memory]) -> list[Memory]:
    """First occurrence of each text (compared case-insensitively, ignoring ``.;,``)."""
    seen: set[str] = set()
    kept: list[Memory] = []
    for memory in memories:
        key = memory.text.rstrip(" .;,").casefold()
        if key not in seen:
            seen.add(key)
            kept.append(memory)
    return kept


def _memory_list(value: object, where: str) -> list[Memory]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{where} must be a list of memories (str, Memory or {{'text': ...}} dicts), "
            f"got {type(value).__name__}; wrap a single memory in a list"
        )
    try:
        return [Memory.from_value(item) for item in value]
    except TypeError as error:
        raise TypeError(f"bad item in {where}: {error}") from error
    except ValueError as error:  # includes pydantic's ValidationError (empty text)
        raise ValueError(f"bad item in {where}: {error}") from error


# --------------------------------------------------------------------------- user ids


def encode_user_id(user_id: str) -> str:
    """Make ``user_id`` a valid LangGraph namespace label, reversibly.

    Percent-encodes ``"%"``, ``"."`` and NUL; everything else is kept.

    >>> encode_user_id("jane.doe@example.com")
    'jane%2Edoe@example%2Ecom'
    """
    return user_id.replace("%", "%25").replace(".", "%2E").replace("\x00", "%00")


def decode_user_id(label: str) -> str:
    """Inverse of :func:`encode_user_id` (e.g. for ``store.list_namespaces`` output)."""
    return unquote(label)


# --------------------------------------------------------------------------- stores


class StoreItem(Protocol):
    """What PersonaProfile reads from a search result (LangGraph's ``SearchItem``)."""

    @property
    def key(self) -> str: ...
    @property
    def value(self) -> dict[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...


@runtime_checkable
class MemoryStore(Protocol):
    """The part of LangGraph's ``BaseStore`` PersonaProfile uses (any ``BaseStore`` fits)."""

    def search(
        self, namespace_prefix: tuple[str, ...], /, *, limit: int = ...
    ) -> Sequence[StoreItem]: ...

    async def asearch(
        self, namespace_prefix: tuple[str, ...], /, *, limit: int = ...
    ) -> Sequence[StoreItem]: ...


def _graph_store() -> MemoryStore | None:
    """The store of the LangGraph graph we run in, or ``None`` outside one."""
    try:
        from langgraph.config import get_store
    except ImportError:  # langgraph is an optional dependency
        return None
    try:
        return cast("MemoryStore | None", get_store())
    except (RuntimeError, KeyError):  # no runnable context / not inside a graph
        return None


# --------------------------------------------------------------------------- results


class PersonaPreferences(BaseModel):
    """The two preferences for one user, and where they came from."""

    user_id: str | None
    """The user the preferences are for (``None`` when no id was given)."""
    draft_preference: str
    """Preference for the draft role: how to say it."""
    judge_preference: str
    """Preference for the judge role: what is appropriate and correct for the user."""
    memories: list[str]
    """Texts of the memories used, deduplicated, in order of first appearance."""
    source: Literal["memories", "store", "memories+store", "neutral"]
    """Where the memories came from (``"neutral"``: nowhere)."""
    namespace: tuple[str, ...] | None = None
    """The store namespace searched, when a store was searched."""
    is_neutral: bool
    """True when nothing was known about the user and neutral preferences are used."""
    note: str | None = None
    """Anything worth knowing: no memories found, store truncated, items skipped..."""
    overridden: list[str] = Field(default_factory=list)
    """In a personalized chat's ``response_metadata["persona"]``: the preferences
    (``"draft_preference"``, ``"judge_preference"``) given as keyword arguments to the
    call, which replaced the profile's; ``draft_preference``/``judge_preference`` there
    are the values actually used (an override may be None). Empty from the profile."""

    def as_model_kwargs(self) -> dict[str, str]:
        """``{"draft_preference": ..., "judge_preference": ...}`` for ``ChatPersonaJudge``."""
        return {
            "draft_preference": self.draft_preference,
            "judge_preference": self.judge_preference,
        }


PersonaProfileInput = str | Mapping[str, Any] | None
"""``None``, a user id, or a dict with optional ``"user_id"`` and ``"memories"``."""


@dataclass(frozen=True)
class _Lookup:
    """A parsed request: who, what was given directly, and where to search."""

    user_id: str | None
    given: list[Memory]
    store: MemoryStore | None
    namespace: tuple[str, ...] | None


# --------------------------------------------------------------------------- profile


def _no_kwargs(kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise TypeError(
            f"PersonaProfile.invoke takes no keyword arguments, got {sorted(kwargs)}; "
            "pass the user id and memories in the input"
        )


class PersonaProfile(RunnableSerializable[PersonaProfileInput, PersonaPreferences]):
    """Runnable mapping a user's memories to Persona-judge draft/judge preferences.

    Input (``invoke``/``ainvoke``/``batch``/...):

    * ``None``: user id from ``config["configurable"]["user_id"]`` (if any);
    * a ``str``: the user id;
    * a dict with optional ``"user_id"`` (str) and ``"memories"`` (list); other keys
      (``"messages"``, ``"question"``, ...) are ignored, so a chain's input dict or a
      LangGraph state can be passed as is. ``"user_id"`` wins over the config's.

    Output: :class:`PersonaPreferences`. Nothing known about the user (unknown or no
    user id, no memories) gives the neutral preferences with ``is_neutral=True`` and
    a ``note`` that says why; it is not an error.

    Example:
        ```python
        profile = PersonaProfile(memories=["Prefers concise answers", "Is a nurse"])
        prefs = profile.invoke(None)
        chat_model.invoke("Hi", **prefs.as_model_kwargs())

        # per-user memories from a LangGraph store, user id from the config:
        profile = PersonaProfile(store=store, search_limit=50)
        prefs = profile.invoke(None, {"configurable": {"user_id": "jane.doe@example.com"}})
        prefs.namespace  # ('users', 'jane%2Edoe@example%2Ecom', 'memories')

        # a different mapping:
        profile = PersonaProfile(store=store, mapper=lambda ms: ("Be brief.", ms[0].text))
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memories: Sequence[MemoryLike] = ()
    """Memories used for every call (stored as :class:`Memory` objects)."""
    store: MemoryStore | None = None
    """Store searched for per-user memories; default: the running graph's store."""
    namespace: tuple[str, ...] = ("users", _USER_ID_LABEL, "memories")
    """Store namespace; the label ``"{user_id}"`` is replaced by the encoded user id."""
    search_limit: int = Field(default=100, ge=1)
    """Most store items read per call; the result notes when the limit is reached."""
    mapper: Callable[[list[Memory]], tuple[str, str]] | None = None
    """Replaces :func:`default_mapper`; an empty string means "use the neutral one"."""
    neutral_draft: str = NEUTRAL_DRAFT
    """Draft preference when nothing about the user's style is known."""
    neutral_judge: str = NEUTRAL_JUDGE
    """Judge preference when nothing about what suits the user is known."""

    @field_validator("memories", mode="before")
    @classmethod
    def _coerce_memories(cls, value: object) -> Sequence[MemoryLike]:
        return _memory_list(value, "PersonaProfile(memories=...)")

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, namespace: tuple[str, ...]) -> tuple[str, ...]:
        if namespace.count(_USER_ID_LABEL) != 1:
            raise ValueError(
                f"namespace must contain the label {_USER_ID_LABEL!r} exactly once, "
                f"e.g. ('users', '{{user_id}}', 'memories'); got {namespace}"
            )
        return namespace

    def map_memories(self, memories: list[Memory]) -> tuple[str, str]:
        """``(draft, judge)`` preferences from ``memories`` (never empty).

        Uses ``mapper`` or :func:`default_mapper`; override in a subclass for a
        different mapping. An empty side gets ``neutral_draft``/``neutral_judge``.
        """
        draft, judge = (self.mapper or default_mapper)(memories)
        if not isinstance(draft, str) or not isinstance(judge, str):
            raise TypeError(
                f"the mapper must return (draft: str, judge: str), got ({draft!r}, {judge!r})"
            )
        return draft or self.neutral_draft, judge or self.neutral_judge

    def namespace_for(self, user_id: str) -> tuple[str, ...]:
        """The store namespace holding ``user_id``'s memories (write them there).

        >>> PersonaProfile().namespace_for("jane.doe")
        ('users', 'jane%2Edoe', 'memories')
        """
        label = encode_user_id(user_id)
        return tuple(label if part == _USER_ID_LABEL else part for part in self.namespace)

    def personalize(self, chat_model: Runnable[LanguageModelInput, Any]) -> PersonalizedChat:
        """A chat runnable that decodes each call with the calling user's preferences.

        See :class:`PersonalizedChat`. ``chat_model`` is a ``ChatPersonaJudge`` or any
        chat model (or runnable made from one: ``bind_tools``, ``with_structured_output``)
        whose ``invoke``/``stream`` accept ``draft_preference``/``judge_preference``
        keyword arguments.
        """
        return PersonalizedChat(profile=self, chat_model=chat_model)

    @override
    def invoke(
        self, input: PersonaProfileInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> PersonaPreferences:
        _no_kwargs(kwargs)
        return self._call_with_config(self._invoke, input, config)

    @override
    async def ainvoke(
        self, input: PersonaProfileInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> PersonaPreferences:
        _no_kwargs(kwargs)
        return await self._acall_with_config(self._ainvoke, input, config)

    def _invoke(
        self,
        input: PersonaProfileInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> PersonaPreferences:
        lookup = self._lookup(input, config)
        items: Sequence[StoreItem] = ()
        if lookup.store is not None and lookup.namespace is not None:
            items = lookup.store.search(lookup.namespace, limit=self.search_limit)
        return self._result(lookup, items)

    async def _ainvoke(
        self,
        input: PersonaProfileInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> PersonaPreferences:
        lookup = self._lookup(input, config)
        items: Sequence[StoreItem] = ()
        if lookup.store is not None and lookup.namespace is not None:
            items = await lookup.store.asearch(lookup.namespace, limit=self.search_limit)
        return self._result(lookup, items)

    def _lookup(self, input: PersonaProfileInput, config: RunnableConfig) -> _Lookup:
        """Parse the input and config into who to look up and where."""
        given = _memory_list(self.memories, "PersonaProfile(memories=...)")
        user_id: object = None
        if isinstance(input, str):
            user_id = input
        elif isinstance(input, Mapping):
            user_id = input.get("user_id")
            if input.get("memories") is not None:
                given += _memory_list(input["memories"], "input['memories']")
        elif input is not None:
            raise TypeError(
                "PersonaProfile input must be None, a user id str, or a dict with optional "
                f"'user_id' and 'memories' keys; got {type(input).__name__}. Pass the user id "
                "as profile.invoke('alice') or config={'configurable': {'user_id': 'alice'}}"
            )
        if user_id is None:
            user_id = config.get("configurable", {}).get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise TypeError(
                f"user_id must be a str, got {type(user_id).__name__} {user_id!r}; "
                f"pass str(user_id) (e.g. {str(user_id)!r})"
            )
        if user_id == "":
            raise ValueError("user_id is an empty string; pass a non-empty id or leave it out")
        store = self.store if self.store is not None else _graph_store()
        namespace = None
        if user_id is not None and store is not None:
            namespace = self.namespace_for(user_id)
        return _Lookup(user_id=user_id, given=given, store=store, namespace=namespace)

    def _result(self, lookup: _Lookup, items: Sequence[StoreItem]) -> PersonaPreferences:
        """Combine given and stored memories and map them to preferences."""
        notes: list[str] = []
        stored: list[Memory] = []
        skipped: list[str] = []
        for item in sorted(items, key=lambda item: (item.created_at, item.key)):
            try:
                stored.append(Memory.from_value(item.value))
            except (TypeError, ValueError):
                skipped.append(item.key)
        if skipped:
            notes.append(
                f"Skipped {len(skipped)} store item(s) with no memory text (keys {skipped}); "
                f"store values like {{'text': ...}} or {{'kind': 'style', 'text': ...}}."
            )
        if len(items) >= self.search_limit:
            notes.append(
                f"The store returned search_limit={self.search_limit} items for namespace "
                f"{lookup.namespace}; more may exist (raise search_limit to read them)."
            )
        memories = _dedupe(lookup.given + stored)
        if lookup.user_id is None:
            if lookup.store is not None or not memories:
                searched = ", so the store was not searched" if lookup.store is not None else ""
                notes.append(
                    "No user id given (pass one as input or as "
                    f"config['configurable']['user_id']){searched}."
                )
        elif lookup.store is None:
            notes.append(
                f"No store to look up user {lookup.user_id!r} (pass PersonaProfile(store=...) "
                "or run in a LangGraph graph compiled with store=...)."
            )
        elif not items:
            notes.append(
                f"No memories found for user {lookup.user_id!r} in namespace {lookup.namespace}."
            )
        if memories:
            draft, judge = self.map_memories(memories)
        else:
            notes.append("Nothing is known about the user; using neutral preferences.")
            draft, judge = self.neutral_draft, self.neutral_judge
        source: Literal["memories", "store", "memories+store", "neutral"]
        if lookup.given and stored:
            source = "memories+store"
        elif lookup.given:
            source = "memories"
        elif stored:
            source = "store"
        else:
            source = "neutral"
        return PersonaPreferences(
            user_id=lookup.user_id,
            draft_preference=draft,
            judge_preference=judge,
            memories=[m.text for m in memories],
            source=source,
            namespace=lookup.namespace,
            is_neutral=not memories,
            note=" ".join(notes) or None,
        )


# --------------------------------------------------------------------------- chat


PersonalizedChatInput = Any
"""Chat input (``LanguageModelInput``: messages, str, PromptValue) or a dict with
``"messages"``. Typed ``Any`` so that LangGraph's ``StateGraph.add_node``, whose
typing wants a ``Runnable[State, ...]``, accepts a :class:`PersonalizedChat`."""
PersonalizedChatOutput = Any
"""The reply message (or what the chat runnable returns, e.g. a structured-output object),
or ``{"messages": [reply]}`` for dict input."""


class _MessagesUpdate(dict[str, list[BaseMessage]]):
    """A streamed ``{"messages": [chunk]}``; ``+`` merges the chunks, so a stream of
    updates adds up to the single update ``invoke`` returns."""

    def __add__(self, other: _MessagesUpdate) -> _MessagesUpdate:
        left = cast("BaseMessageChunk", self["messages"][0])
        right = cast("BaseMessageChunk", other["messages"][0])
        return _MessagesUpdate(messages=[left + right])


def _split_chat_input(
    input: PersonalizedChatInput,
) -> tuple[LanguageModelInput, PersonaProfileInput, bool]:
    """``(messages, profile input, whether to answer {"messages": [...]})``."""
    if isinstance(input, Mapping):
        if "messages" not in input:
            raise ValueError(
                "dict input to a personalized chat needs a 'messages' key (LangGraph "
                f"MessagesState style), got keys {sorted(map(str, input))}; pass "
                "{'messages': [...], 'user_id': ...} or the messages themselves"
            )
        return input["messages"], input, True
    return input, None, False


_PREFERENCE_KWARGS = ("draft_preference", "judge_preference")


def _used_persona(prefs: PersonaPreferences, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``prefs`` as metadata, with the preferences the call's kwargs replaced (they win)."""
    persona = prefs.model_dump(mode="json")
    overridden = [name for name in _PREFERENCE_KWARGS if name in kwargs]
    persona.update({name: kwargs[name] for name in overridden})
    persona["overridden"] = overridden
    return persona


def _with_persona(reply: Any, persona: dict[str, Any]) -> Any:
    """A reply message with the persona in its metadata; other outputs (parsed structured
    output) have no metadata to carry it and pass unchanged."""
    if not isinstance(reply, BaseMessage):
        return reply
    metadata = {**reply.response_metadata, "persona": persona}
    return reply.model_copy(update={"response_metadata": metadata})


class PersonalizedChat(RunnableSerializable[PersonalizedChatInput, PersonalizedChatOutput]):
    """A chat model that decodes every call with the calling user's preferences.

    Made by :meth:`PersonaProfile.personalize`. Each call runs ``profile`` for the
    user, then ``chat_model`` with ``draft_preference=`` and ``judge_preference=``
    (keyword arguments given to this runnable are passed on and win over them).

    Input:

    * chat input (a list of messages, a ``str``, a ``PromptValue`` such as a
      ``ChatPromptTemplate``'s output), user id from
      ``config["configurable"]["user_id"]``; output: the reply message;
    * a dict with ``"messages"`` (LangGraph ``MessagesState``) and optional
      ``"user_id"``/``"memories"``; output: ``{"messages": [reply]}``, so it works as
      a ``StateGraph(MessagesState)`` node.

    ``stream``/``astream`` pass the chat model's chunks through (for dict input each
    wrapped as ``{"messages": [chunk]}``). The preferences used are in
    ``reply.response_metadata["persona"]`` (a :class:`PersonaPreferences` dump; on
    the first chunk when streaming): a ``draft_preference``/``judge_preference``
    keyword argument given to the call replaces the profile's value there too, and
    ``overridden`` lists which were replaced.

    Example:
        ```python
        chat = PersonaProfile(store=store).personalize(ChatPersonaJudge(...))
        chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | chat
        chain.invoke({"question": "Plan a dinner"}, {"configurable": {"user_id": "alice"}})

        builder = StateGraph(MessagesState)
        builder.add_node("chat", chat)
        builder.add_edge(START, "chat")
        graph = builder.compile(store=store)  # PersonaProfile() without store uses it
        graph.invoke({"messages": [("human", "Hi")]}, {"configurable": {"user_id": "alice"}})
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    profile: PersonaProfile
    chat_model: Runnable[LanguageModelInput, Any]

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> PersonalizedChat:
        """This chat with ``tools`` bound to its chat model (``chat_model.bind_tools``)."""
        return self._personalized(self._chat_model_method("bind_tools")(tools, **kwargs))

    def with_structured_output(self, schema: Any, **kwargs: Any) -> PersonalizedChat:
        """This chat answering with ``schema`` objects (``chat_model.with_structured_output``).

        Its output is the parsed object, without persona metadata; use chat input (messages
        or a str), not a LangGraph node's dict.
        """
        return self._personalized(
            self._chat_model_method("with_structured_output")(schema, **kwargs)
        )

    def _personalized(self, chat_model: Runnable[LanguageModelInput, Any]) -> PersonalizedChat:
        return PersonalizedChat(profile=self.profile, chat_model=chat_model)

    def _chat_model_method(self, name: str) -> Callable[..., Runnable[LanguageModelInput, Any]]:
        method = getattr(self.chat_model, name, None)
        if method is None:
            raise AttributeError(
                f"{type(self.chat_model).__name__} has no {name}(); personalize a chat model "
                f"(e.g. ChatPersonaJudge) to use {name}, or call it before personalize()."
            )
        return cast("Callable[..., Runnable[LanguageModelInput, Any]]", method)

    @override
    def invoke(
        self, input: PersonalizedChatInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> PersonalizedChatOutput:
        return self._call_with_config(self._invoke, input, config, **kwargs)

    @override
    async def ainvoke(
        self, input: PersonalizedChatInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> PersonalizedChatOutput:
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    @override
    def stream(
        self,
        input: PersonalizedChatInput,
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> Iterator[PersonalizedChatOutput]:
        yield from self._transform_stream_with_config(iter([input]), self._stream, config, **kwargs)

    @override
    async def astream(
        self,
        input: PersonalizedChatInput,
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> AsyncIterator[PersonalizedChatOutput]:
        async def one() -> AsyncIterator[PersonalizedChatInput]:
            yield input

        async for chunk in self._atransform_stream_with_config(
            one(), self._astream, config, **kwargs
        ):
            yield chunk

    def _invoke(
        self,
        input: PersonalizedChatInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> PersonalizedChatOutput:
        messages, profile_input, as_update = _split_chat_input(input)
        prefs = self.profile.invoke(profile_input, config)
        reply = self.chat_model.invoke(messages, config, **{**prefs.as_model_kwargs(), **kwargs})
        return _output(_with_persona(reply, _used_persona(prefs, kwargs)), as_update)

    async def _ainvoke(
        self,
        input: PersonalizedChatInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> PersonalizedChatOutput:
        messages, profile_input, as_update = _split_chat_input(input)
        prefs = await self.profile.ainvoke(profile_input, config)
        reply = await self.chat_model.ainvoke(
            messages, config, **{**prefs.as_model_kwargs(), **kwargs}
        )
        return _output(_with_persona(reply, _used_persona(prefs, kwargs)), as_update)

    def _stream(
        self,
        inputs: Iterator[PersonalizedChatInput],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[PersonalizedChatOutput]:
        messages, profile_input, as_update = _split_chat_input(next(inputs))
        prefs = self.profile.invoke(profile_input, config)
        chunks = self.chat_model.stream(messages, config, **{**prefs.as_model_kwargs(), **kwargs})
        persona = _used_persona(prefs, kwargs)
        for i, chunk in enumerate(chunks):
            yield _output(_with_persona(chunk, persona) if i == 0 else chunk, as_update)

    async def _astream(
        self,
        inputs: AsyncIterator[PersonalizedChatInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[PersonalizedChatOutput]:
        messages, profile_input, as_update = _split_chat_input(await anext(inputs))
        prefs = await self.profile.ainvoke(profile_input, config)
        chunks = self.chat_model.astream(messages, config, **{**prefs.as_model_kwargs(), **kwargs})
        persona = _used_persona(prefs, kwargs)
        first = True
        async for chunk in chunks:
            yield _output(_with_persona(chunk, persona) if first else chunk, as_update)
            first = False


def _output(reply: Any, as_update: bool) -> PersonalizedChatOutput:
    if not as_update:
        return reply
    if not isinstance(reply, BaseMessage):
        raise TypeError(
            f"For dict input (a LangGraph MessagesState node) the chat runnable must return "
            f"messages, but it returned {type(reply).__name__}. Call structured output with "
            "chat input (messages or a str) instead, or parse the reply in a later node."
        )
    return _MessagesUpdate(messages=[reply])
