"""Prompt side of Persona-judge: chat-template rendering per role, tool prompting, output text.

Everything here is pure (a tokenizer and LangChain messages in, strings / token ids out); no
model is run.

Role contexts
    Each role (draft, judge) reads the same conversation conditioned on its own preference.

    * Default layout: the conversation's leading system message is kept and the preference is
      appended to it as ``"\\n\\nUser preference: <preference>"``. With no system message one is
      created. If the chat template inserts a default system prompt of its own when the first
      message is not a system message (SmolLM2 does: "You are a helpful AI assistant named
      SmolLM, ..."), that default text is kept in front of the preference, so the two roles'
      contexts differ from the plain prompt only by the preference line.
    * Research layout (``research_layout=True``, the released code's reproduction mode): the
      preference is a user turn followed by an empty assistant turn, placed before the
      conversation (after its leading system message, if any).
    * A final AI message is rendered as a completed turn followed by a fresh generation prompt
      (a new assistant turn), not continued in place.

Tool calling by prompting
    Templates that handle tools themselves (their source mentions ``tools``) get the tool schemas
    through ``apply_chat_template(tools=...)`` and native ``tool_calls`` / ``tool`` turns.
    Otherwise (SmolLM2) the schemas and the call format are described in the system message, AI
    tool calls in the history are rendered as ``<tool_call>`` JSON blocks and tool results as user
    turns. ``parse_tool_calls`` reads the blocks back in LangChain's shapes.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypedDict

from jinja2.exceptions import TemplateError
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call
from transformers import PreTrainedTokenizerBase
from typing_extensions import Unpack

PREFERENCE_LABEL = "User preference: "
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# The leading "name" of a tool-call object, read from a block that is not valid JSON (e.g. cut
# off by max_tokens): the format puts the name first, and a forced choice prefills it.
_LEADING_NAME = re.compile(r'\A\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")')

ChatTurn = dict[str, Any]

# Content blocks that an AI message may carry besides text; its `tool_calls` hold the same data.
_AI_TOOL_BLOCKS = frozenset({"tool_use", "tool_call", "tool_call_chunk", "function_call"})
_CHAT_MESSAGE_ROLES = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}


def message_text(message: BaseMessage, position: int) -> str:
    """The text of a message whose content is a string or a list of text blocks.

    Raises ValueError for other blocks (images, audio, files, ...): this model reads text only.
    """
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif not (isinstance(message, AIMessage) and kind in _AI_TOOL_BLOCKS):
            raise ValueError(
                f"Message {position} ({message.type}) has a {kind!r} content block; "
                "ChatPersonaJudge reads text only. Remove the block or describe it in text."
            )
    return "".join(parts)


def supports_native_tools(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's chat template renders tool schemas itself."""
    return "tools" in _chat_template(tokenizer)


def messages_to_chat(
    messages: Sequence[BaseMessage], *, native_tools: bool = False
) -> list[ChatTurn]:
    """Convert LangChain messages (any order) to chat-template turns ``{"role", "content"}``.

    With ``native_tools`` AI tool calls become ``tool_calls`` entries and tool results ``tool``
    turns; otherwise both are rendered as text (``<tool_call>`` blocks and user turns).
    """
    if not messages:
        raise ValueError("No messages: pass at least one message (e.g. a HumanMessage).")
    tool_names = {
        call["id"]: call["name"]
        for message in messages
        if isinstance(message, AIMessage)
        for call in message.tool_calls
    }
    turns: list[ChatTurn] = []
    for position, message in enumerate(messages):
        text = message_text(message, position)
        if isinstance(message, SystemMessage):
            turns.append({"role": "system", "content": text})
        elif isinstance(message, HumanMessage):
            turns.append({"role": "user", "content": text})
        elif isinstance(message, AIMessage):
            turns.append(_assistant_turn(message, text, native_tools))
        elif isinstance(message, ToolMessage):
            name = message.name or tool_names.get(message.tool_call_id, "tool")
            if message.status == "error" and not text.lower().startswith("error"):
                text = f"Error: {text}"  # the model must know the call failed
            if native_tools:
                turns.append(
                    {
                        "role": "tool",
                        "content": text,
                        "tool_call_id": message.tool_call_id,
                        "name": name,
                    }
                )
            else:
                turns.append(
                    {
                        "role": "user",
                        "content": f"Tool result for {name} (id {message.tool_call_id}): {text}",
                    }
                )
        elif isinstance(message, ChatMessage):
            role = message.role.strip().lower()
            if role not in _CHAT_MESSAGE_ROLES:
                raise ValueError(
                    f"Message {position} is a ChatMessage with role {message.role!r}; use one "
                    f"of the roles {sorted(_CHAT_MESSAGE_ROLES)}, or a SystemMessage, "
                    "HumanMessage, AIMessage or ToolMessage."
                )
            turns.append({"role": _CHAT_MESSAGE_ROLES[role], "content": text})
        else:
            raise ValueError(
                f"Message {position} has unsupported type {type(message).__name__}; "
                "use SystemMessage, HumanMessage, AIMessage, ToolMessage or ChatMessage."
            )
    return turns


def tool_prompt(tools: Sequence[dict[str, Any]]) -> str:
    """System-prompt section describing OpenAI-format tools and the ``<tool_call>`` format.

    Each tool is shown as a signature with one line per argument rather than as raw JSON
    schema: small models given the schema tend to copy it into their calls.
    """
    described = "\n".join(_describe_tool(tool["function"]) for tool in tools)
    return (
        "You can call these functions:\n"
        f"{described}\n\n"
        "To call a function, reply with one block per call, arguments as a JSON object:\n"
        f"{TOOL_CALL_OPEN}\n"
        '{"name": "function_name", "arguments": {"argument_name": value}}\n'
        f"{TOOL_CALL_CLOSE}"
    )


def tool_call_prefix(tool: Mapping[str, Any] | None) -> str:
    """Assistant prefill that forces a tool call: of ``tool`` (OpenAI format), or of any tool.

    For a given tool the prefill runs into the arguments object up to its first (required)
    argument's key, e.g. ``{"name": "get_weather", "arguments": {"city":``: small models
    otherwise tend to copy the JSON schema instead of filling in values. It ends without a
    trailing space so the model's own tokenization of what follows stays natural.
    """
    if tool is None:
        return f'{TOOL_CALL_OPEN}\n{{"name": "'
    function = tool["function"]
    parameters = function.get("parameters") or {}
    keys = [*parameters.get("required", []), *parameters.get("properties", {})]
    first_argument = f"{json.dumps(keys[0])}:" if keys else ""
    name = json.dumps(function["name"])
    return f'{TOOL_CALL_OPEN}\n{{"name": {name}, "arguments": {{{first_argument}'


def tool_name_opening(tool: Mapping[str, Any]) -> str:
    """The start of a call of ``tool`` up to its name: ``<tool_call>\n{"name": "X",``."""
    return f'{TOOL_CALL_OPEN}\n{{"name": {json.dumps(tool["function"]["name"])},'


def template_default_system_prompt(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The system prompt the chat template inserts when the first message is not a system one.

    Found by rendering the same user turn with and without a marker system message and
    comparing: SmolLM2 gives its "You are a helpful AI assistant named SmolLM, ..." text; a plain
    ChatML template gives None.
    """
    system_marker, user_marker = "\x00persona-judge-system\x00", "\x00persona-judge-user\x00"
    user = {"role": "user", "content": user_marker}
    if not _renders_system(tokenizer):
        return None
    with_system = _render(tokenizer, [{"role": "system", "content": system_marker}, user])
    without_system = _render(tokenizer, [user])
    before, _, after = with_system.partition(system_marker)
    if not (without_system.startswith(before) and without_system.endswith(after)):
        return None
    default = without_system[len(before) : len(without_system) - len(after)]
    return default or None


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[BaseMessage],
    preference: str | None,
    *,
    research_layout: bool = False,
    tools: Sequence[dict[str, Any]] | None = None,
    assistant_prefix: str = "",
) -> str:
    """One role's context as text: the chat template with a generation prompt, then the prefix.

    ``tools`` are OpenAI-format tool dicts (``convert_to_openai_tool``); ``assistant_prefix`` is
    text the assistant's answer is forced to start with (it is part of the answer).
    """
    native = supports_native_tools(tokenizer)
    turns = _merge_system_turns(tokenizer, messages_to_chat(messages, native_tools=native))
    system_extras = [tool_prompt(tools)] if tools and not native else []
    if preference and research_layout:
        start = 1 if turns[0]["role"] == "system" else 0
        turns[start:start] = [
            {"role": "user", "content": preference},
            {"role": "assistant", "content": ""},
        ]
    elif preference:
        system_extras.append(PREFERENCE_LABEL + preference)
    if system_extras:
        if turns[0]["role"] == "system":
            turns[0] = {**turns[0], "content": "\n\n".join([turns[0]["content"], *system_extras])}
        else:
            default = template_default_system_prompt(tokenizer)
            content = "\n\n".join([default, *system_extras] if default else system_extras)
            turns.insert(0, {"role": "system", "content": content})
    if turns[0]["role"] == "system" and not _renders_system(tokenizer):
        turns = _fold_system_into_user(turns)
    native_tools: list[dict[Any, Any] | Callable[..., Any]] | None = (
        list(tools) if tools and native else None
    )
    return _render_conversation(tokenizer, turns, native_tools) + assistant_prefix


class PromptOptions(TypedDict, total=False):
    """Keyword options of ``render_prompt`` (see there)."""

    research_layout: bool
    tools: Sequence[dict[str, Any]] | None
    assistant_prefix: str


def role_input_ids(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[BaseMessage],
    preference: str | None,
    **options: Unpack[PromptOptions],
) -> list[int]:
    """Token ids of one role's context (``render_prompt``, tokenized without extra specials)."""
    text = render_prompt(tokenizer, messages, preference, **options)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tool_call_content(text: str) -> str:
    """The plain-text part of an answer that may contain tool calls.

    It is the text before the first ``<tool_call>``, without trailing whitespace; a trailing
    partial ``<tool_call>`` tag is held back (and dropped), so applied to a growing text the
    result only grows (safe for streaming). Text after the first block is not content: small
    models tend to invent the tool's result there.
    """
    start = text.find(TOOL_CALL_OPEN)
    if start < 0:
        start = len(text) - _partial_suffix_length(text, [TOOL_CALL_OPEN])
    return text[:start].rstrip()


def tool_calls_ended(text: str) -> bool:
    """Whether the answer's tool calls are over: a closed block followed by other text.

    A tool-call turn ends after its last ``</tool_call>``; what a small model writes next is
    usually an invented tool result, so generation stops as soon as text follows a closed block
    that cannot begin another ``<tool_call>`` (several calls in a row stay possible).
    """
    end = text.rfind(TOOL_CALL_CLOSE)
    if end < 0:
        return False
    rest = text[end + len(TOOL_CALL_CLOSE) :].lstrip()
    may_open_another = rest.startswith(TOOL_CALL_OPEN) or TOOL_CALL_OPEN.startswith(rest)
    return bool(rest) and not may_open_another


def parse_tool_calls(
    text: str, tool_names: Collection[str] | None = None
) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Split model output into content, parsed tool calls and unparseable ones.

    Blocks are ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; the closing tag of
    the last block may be missing (generation ended). Text after the JSON object inside a block
    is ignored; ``"parameters"`` is accepted for ``"arguments"``, and arguments given as a JSON
    string are decoded. Ids are generated (``call_<hex>``). An invalid call's ``args`` is the
    raw block as the model wrote it; its ``name`` is read from the block's leading ``"name"``
    entry even when the block is not valid JSON (e.g. cut off by ``max_tokens``). Given
    ``tool_names``, a call of any other name (small models invent some) is invalid too.
    """
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    start = text.find(TOOL_CALL_OPEN)
    while start >= 0:
        body_start = start + len(TOOL_CALL_OPEN)
        end = text.find(TOOL_CALL_CLOSE, body_start)
        block_end = end + len(TOOL_CALL_CLOSE) if end >= 0 else len(text)
        body = text[body_start : end if end >= 0 else len(text)].strip()
        call_id = f"call_{uuid.uuid4().hex}"
        name, args, error = _parse_call(body)
        if name is None:
            name = _leading_name(body)
        if error is None and tool_names is not None and name not in tool_names:
            error = f"{name!r} is not one of the offered tools {sorted(tool_names)}."
        if error is None and name is not None and args is not None:
            calls.append(tool_call(name=name, args=args, id=call_id))
        else:
            # The whole block, tags included: never a JSON object, so a streamed chunk
            # of it stays invalid when LangChain re-parses merged tool-call chunks.
            raw = text[start:block_end]
            invalid.append(invalid_tool_call(name=name, args=raw, id=call_id, error=error))
        start = text.find(TOOL_CALL_OPEN, end + len(TOOL_CALL_CLOSE)) if end >= 0 else -1
    return tool_call_content(text), calls, invalid


class TextAssembler:
    """Incremental detokenizer with stop sequences, for streaming generated tokens as text.

    ``push`` returns only text that is final: a trailing incomplete UTF-8 character and any
    suffix that could begin a stop string are held back. When a stop string appears (also across
    several tokens) the text is cut before it, ``stopped`` turns True and later tokens are
    ignored. ``finish`` releases held-back text at the end of generation, except a trailing
    incomplete UTF-8 character (generation was cut in the middle of it, e.g. by ``max_tokens``):
    it decodes to U+FFFD (one per byte with some tokenizers) and is dropped. Any U+FFFD at the
    very end (undecodable bytes, or a genuine U+FFFD) looks the same and is dropped too.
    Special tokens are skipped.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str] = ()) -> None:
        if any(not s for s in stop):
            raise ValueError("Stop sequences must be non-empty strings.")
        self._tokenizer = tokenizer
        self._stop = list(stop)
        self._ids: list[int] = []
        self._text = ""
        self.stopped = False

    @property
    def text(self) -> str:
        """The text released so far (everything, after ``finish``)."""
        return self._text

    @property
    def token_ids(self) -> list[int]:
        """Every token pushed, including any after the stop sequence."""
        return list(self._ids)

    def push(self, token_id: int) -> str:
        """Add one generated token; return the newly final text (possibly empty)."""
        self._ids.append(token_id)
        if self.stopped:
            return ""
        full = self._decode().rstrip("\ufffd")
        longest = max((len(s) for s in self._stop), default=0)
        search_from = max(0, len(self._text) - longest)
        hits = [i for s in self._stop if (i := full.find(s, search_from)) >= 0]
        if hits:
            self.stopped = True
            return self._release(full[: max(min(hits), len(self._text))])
        return self._release(full[: len(full) - _partial_suffix_length(full, self._stop)])

    def finish(self) -> str:
        """Release the held-back text once generation is over (nothing after a stop).

        Trailing U+FFFD (an incomplete UTF-8 character, e.g. cut by ``max_tokens``) is dropped.
        """
        if self.stopped:
            return ""
        return self._release(self._decode().rstrip("\ufffd"))

    def _decode(self) -> str:
        return str(self._tokenizer.decode(self._ids, skip_special_tokens=True))

    def _release(self, final_text: str) -> str:
        delta = final_text[len(self._text) :]
        self._text += delta
        return delta


def _assistant_turn(message: AIMessage, text: str, native_tools: bool) -> ChatTurn:
    if not message.tool_calls:
        return {"role": "assistant", "content": text}
    if native_tools:
        return {
            "role": "assistant",
            "content": text,
            "tool_calls": [
                {
                    "type": "function",
                    "id": call["id"],
                    "function": {"name": call["name"], "arguments": call["args"]},
                }
                for call in message.tool_calls
            ],
        }
    blocks = [
        f"{TOOL_CALL_OPEN}\n"
        f"{json.dumps({'name': call['name'], 'arguments': call['args']}, ensure_ascii=False)}\n"
        f"{TOOL_CALL_CLOSE}"
        for call in message.tool_calls
    ]
    return {"role": "assistant", "content": "\n".join([text, *blocks] if text else blocks)}


def _merge_system_turns(
    tokenizer: PreTrainedTokenizerBase, turns: list[ChatTurn]
) -> list[ChatTurn]:
    """Merge the leading system turns into one; later ones stay in place if the template
    renders system turns there, else they are merged into the leading one too."""
    leading = 0
    while leading < len(turns) and turns[leading]["role"] == "system":
        leading += 1
    rest = turns[leading:]
    system_texts = [turn["content"] for turn in turns[:leading]]
    if any(turn["role"] == "system" for turn in rest) and not _renders_later_system(tokenizer):
        system_texts += [turn["content"] for turn in rest if turn["role"] == "system"]
        rest = [turn for turn in rest if turn["role"] != "system"]
    if not system_texts:
        return rest
    return [{"role": "system", "content": "\n\n".join(system_texts)}, *rest]


def _render_conversation(
    tokenizer: PreTrainedTokenizerBase,
    turns: list[ChatTurn],
    tools: list[dict[Any, Any] | Callable[..., Any]] | None,
) -> str:
    """Render ``turns``; for templates that demand alternating roles (they raise on two user
    turns in a row, e.g. two tool results), consecutive turns of one role are joined."""
    try:
        return _render(tokenizer, turns, tools=tools)
    except TemplateError as error:
        joined = _join_consecutive_roles(turns)
        if joined != turns:
            with contextlib.suppress(TemplateError):
                return _render(tokenizer, joined, tools=tools)
        raise ValueError(
            f"The model's chat template rejected this conversation: {error}. Check the order "
            "of the messages (many templates need user and assistant turns to alternate)."
        ) from error


def _join_consecutive_roles(turns: list[ChatTurn]) -> list[ChatTurn]:
    """``turns`` with each run of plain text turns of one role joined into one turn."""
    joined: list[ChatTurn] = []
    for turn in turns:
        previous = joined[-1] if joined else None
        if (
            previous
            and _is_plain(previous)
            and _is_plain(turn)
            and previous["role"] == turn["role"]
        ):
            content = f"{previous['content']}\n\n{turn['content']}"
            joined[-1] = {"role": turn["role"], "content": content}
        else:
            joined.append(turn)
    return joined


def _is_plain(turn: ChatTurn) -> bool:
    return set(turn) == {"role", "content"}


def _renders_system(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the chat template renders a leading system turn (Gemma's, for one, raises)."""
    marker = "\x00persona-judge-system\x00"
    probe = [{"role": "system", "content": marker}, {"role": "user", "content": "b"}]
    try:
        return marker in _render(tokenizer, probe)
    except Exception:  # templates signal unsupported layouts by raising
        return False


def _fold_system_into_user(turns: list[ChatTurn]) -> list[ChatTurn]:
    """Move the leading system turn's text to the start of the first user turn.

    For templates without a system role: the system message and the preferences must still
    reach the model, and the first user turn is where such templates expect instructions.
    """
    system, rest = turns[0]["content"], turns[1:]
    if rest and rest[0]["role"] == "user":
        return [{**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


def _renders_later_system(tokenizer: PreTrainedTokenizerBase) -> bool:
    marker = "\x00persona-judge-later-system\x00"
    probe = [
        {"role": "system", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "system", "content": marker},
        {"role": "user", "content": "c"},
    ]
    try:
        return marker in _render(tokenizer, probe)
    except Exception:  # templates signal unsupported layouts by raising
        return False


def _chat_template(tokenizer: PreTrainedTokenizerBase) -> str:
    template = tokenizer.chat_template
    if isinstance(template, dict):  # named templates: "default" is the chat one
        template = template.get("default")
    if not isinstance(template, str):
        raise ValueError(
            "The tokenizer has no chat template; use an instruction-tuned (chat) model."
        )
    return template


def _render(
    tokenizer: PreTrainedTokenizerBase,
    turns: list[ChatTurn],
    *,
    tools: list[dict[Any, Any] | Callable[..., Any]] | None = None,
) -> str:
    _chat_template(tokenizer)
    rendered = tokenizer.apply_chat_template(
        turns, tools=tools, tokenize=False, add_generation_prompt=True
    )
    if not isinstance(rendered, str):
        raise TypeError(f"apply_chat_template returned {type(rendered).__name__}, not text")
    return rendered


def _partial_suffix_length(text: str, candidates: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a candidate."""
    for size in range(min(len(text), max((len(c) for c in candidates), default=1) - 1), 0, -1):
        suffix = text[-size:]
        if any(c.startswith(suffix) for c in candidates):
            return size
    return 0


def _describe_tool(function: Mapping[str, Any]) -> str:
    """``name(arg: type, ...): description`` plus one line per described argument."""
    parameters = function.get("parameters") or {}
    properties: dict[str, Any] = parameters.get("properties", {})
    required = set(parameters.get("required", []))
    signature = ", ".join(
        f"{key}{'' if key in required else '?'}: {_describe_type(schema)}"
        for key, schema in properties.items()
    )
    lines = [f"- {function['name']}({signature})"]
    if description := function.get("description"):
        lines[0] += f": {description}"
    lines += [
        f"    {key}: {schema['description']}"
        for key, schema in properties.items()
        if schema.get("description")
    ]
    return "\n".join(lines)


def _describe_type(schema: Mapping[str, Any]) -> str:
    """A short type name for flat JSON schemas; nested ones are shown as JSON schema."""
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, str) and kind in ("string", "integer", "number", "boolean", "null"):
        return kind
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        return f"array of {_describe_type(schema['items'])}"
    details = {k: v for k, v in schema.items() if k not in ("description", "title")}
    return json.dumps(details, ensure_ascii=False)


def _leading_name(body: str) -> str | None:
    """The tool name at the start of a call block that did not parse, if it is readable."""
    match = _LEADING_NAME.match(body)
    if match is None:
        return None
    try:
        name = json.loads(match.group(1))
    except json.JSONDecodeError:
        return None
    return name if isinstance(name, str) and name else None


def _parse_call(body: str) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """(name, arguments, error) of one tool-call block's body."""
    try:
        payload, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as error:
        return None, None, f"Tool call is not valid JSON: {error}"
    if not isinstance(payload, dict):
        return None, None, "Tool call must be a JSON object with 'name' and 'arguments'."
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return None, None, "Tool call has no 'name' string."
    args = payload.get("arguments", payload.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as error:
            return name, None, f"Tool call arguments are not valid JSON: {error}"
    if not isinstance(args, dict):
        return name, None, "Tool call 'arguments' must be a JSON object."
    return name, args, None
