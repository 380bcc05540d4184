"""Prompt rendering, tool-call parsing and incremental detokenization (no model runs)."""

from __future__ import annotations

import itertools

import pytest
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from transformers import PreTrainedTokenizerFast

from langchain_persona_judge.prompts import (
    PREFERENCE_LABEL,
    TextAssembler,
    messages_to_chat,
    parse_tool_calls,
    render_prompt,
    role_input_ids,
    template_default_system_prompt,
    tool_call_content,
    tool_call_prefix,
    tool_calls_ended,
    tool_prompt,
)
from tests.tiny import tiny_tokenizer

# SmolLM2-135M-Instruct's template: inserts its own system prompt when none is first.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLLM2_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# A Qwen-like template that renders tools and tool turns itself.
NATIVE_TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTOOLS:{% for t in tools %}{{ t.function.name }};"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} "
    "{{ c.function.arguments | tojson }}{% endfor %}{% endif %}"
    "{% if m.role == 'tool' %} [{{ m.tool_call_id }}]{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def chatml() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def smollm2() -> PreTrainedTokenizerFast:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    return tokenizer


def turn(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}<|im_end|>\n"


ASSISTANT = "<|im_start|>assistant\n"


class TestMessagesToChat:
    def test_roles_in_any_order(self) -> None:
        messages = [
            HumanMessage("q1"),
            AIMessage("a1"),
            SystemMessage("s"),
            HumanMessage("q2"),
            AIMessage("a2"),
        ]
        assert messages_to_chat(messages) == [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"},
        ]

    def test_text_blocks_are_joined(self) -> None:
        message = HumanMessage(content=[{"type": "text", "text": "Hello "}, "world"])
        assert messages_to_chat([message]) == [{"role": "user", "content": "Hello world"}]

    def test_image_block_is_rejected(self) -> None:
        message = HumanMessage(
            content=[
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]
        )
        with pytest.raises(ValueError, match=r"Message 1 \(human\).*'image_url'.*text only"):
            messages_to_chat([SystemMessage("s"), message])

    def test_empty_list_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="No messages"):
            messages_to_chat([])

    def test_unsupported_message_type(self) -> None:
        with pytest.raises(ValueError, match="FunctionMessage"):
            messages_to_chat([FunctionMessage(name="f", content="x")])
        with pytest.raises(ValueError, match="role 'critic'"):
            messages_to_chat([ChatMessage(role="critic", content="x")])

    def test_chat_message_roles(self) -> None:
        assert messages_to_chat([ChatMessage(role="human", content="x")]) == [
            {"role": "user", "content": "x"}
        ]
        assert messages_to_chat([ChatMessage(role="developer", content="Be brief.")]) == [
            {"role": "system", "content": "Be brief."}
        ]
        assert messages_to_chat([ChatMessage(role=" User", content="x")]) == [
            {"role": "user", "content": "x"}
        ]
        with pytest.raises(ValueError, match=r"role 'critic'; use one of the roles \['ai', "):
            messages_to_chat([ChatMessage(role="critic", content="x")])

    def test_tool_history_as_text(self) -> None:
        messages = [
            HumanMessage("Weather in Paris?"),
            AIMessage(
                "Let me check.",
                tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}],
            ),
            ToolMessage("sunny", tool_call_id="c1"),
        ]
        chat = messages_to_chat(messages)
        assert chat[1] == {
            "role": "assistant",
            "content": 'Let me check.\n<tool_call>\n{"name": "get_weather", '
            '"arguments": {"city": "Paris"}}\n</tool_call>',
        }
        assert chat[2] == {"role": "user", "content": "Tool result for get_weather (id c1): sunny"}
        failed = ToolMessage("no such city", tool_call_id="c1", status="error")
        assert messages_to_chat([*messages[:2], failed])[2]["content"] == (
            "Tool result for get_weather (id c1): Error: no such city"
        )
        # LangGraph's ToolNode already writes "Error: ..." into the message.
        marked = ToolMessage("Error: no such city", tool_call_id="c1", status="error")
        assert messages_to_chat([*messages[:2], marked])[2]["content"] == (
            "Tool result for get_weather (id c1): Error: no such city"
        )

    def test_tool_history_native(self) -> None:
        messages = [
            AIMessage(
                "", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]
            ),
            ToolMessage("rain", tool_call_id="c1"),
        ]
        chat = messages_to_chat(messages, native_tools=True)
        assert chat[0]["tool_calls"] == [
            {
                "type": "function",
                "id": "c1",
                "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
            }
        ]
        assert chat[1] == {
            "role": "tool",
            "content": "rain",
            "tool_call_id": "c1",
            "name": "get_weather",
        }

    def test_ai_tool_use_blocks_are_skipped(self) -> None:
        message = AIMessage(
            content=[
                {"type": "text", "text": "ok"},
                {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
            ],
            tool_calls=[{"name": "f", "args": {}, "id": "c1"}],
        )
        assert messages_to_chat([message])[0]["content"].startswith("ok\n<tool_call>")


class TestRenderPrompt:
    def test_preference_appended_to_kept_system_message(self, chatml) -> None:
        messages = [SystemMessage("You are terse."), HumanMessage("Hi")]
        assert render_prompt(chatml, messages, "Use French.") == (
            turn("system", f"You are terse.\n\n{PREFERENCE_LABEL}Use French.")
            + turn("user", "Hi")
            + ASSISTANT
        )

    def test_system_message_created_when_absent(self, chatml) -> None:
        assert render_prompt(chatml, [HumanMessage("Hi")], "Use French.") == (
            turn("system", f"{PREFERENCE_LABEL}Use French.") + turn("user", "Hi") + ASSISTANT
        )

    def test_template_default_system_prompt_is_kept(self, smollm2) -> None:
        assert template_default_system_prompt(smollm2) == SMOLLM2_DEFAULT
        assert render_prompt(smollm2, [HumanMessage("Hi")], "Be brief.") == (
            turn("system", f"{SMOLLM2_DEFAULT}\n\n{PREFERENCE_LABEL}Be brief.")
            + turn("user", "Hi")
            + ASSISTANT
        )

    def test_plain_chatml_has_no_default_system_prompt(self, chatml) -> None:
        assert template_default_system_prompt(chatml) is None

    @pytest.mark.parametrize("preference", [None, ""])
    def test_no_preference_leaves_prompt_unchanged(self, smollm2, preference) -> None:
        messages = [HumanMessage("Hi")]
        expected = smollm2.apply_chat_template(
            [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
        )
        assert render_prompt(smollm2, messages, preference) == expected

    def test_any_order_and_later_system_kept_in_place(self, chatml) -> None:
        messages = [
            HumanMessage("q1"),
            AIMessage("a1"),
            SystemMessage("Now answer in French."),
            HumanMessage("q2"),
        ]
        assert render_prompt(chatml, messages, "Be brief.") == (
            turn("system", f"{PREFERENCE_LABEL}Be brief.")
            + turn("user", "q1")
            + turn("assistant", "a1")
            + turn("system", "Now answer in French.")
            + turn("user", "q2")
            + ASSISTANT
        )

    def test_leading_system_messages_are_merged(self, chatml) -> None:
        messages = [SystemMessage("A"), SystemMessage("B"), HumanMessage("q")]
        assert render_prompt(chatml, messages, "P") == (
            turn("system", f"A\n\nB\n\n{PREFERENCE_LABEL}P") + turn("user", "q") + ASSISTANT
        )

    def test_later_system_merged_when_template_rejects_it(self) -> None:
        tokenizer = tiny_tokenizer()
        tokenizer.chat_template = (
            "{% for m in messages %}{% if m.role == 'system' and not loop.first %}"
            "{{ raise_exception('system only first') }}{% endif %}"
            "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
        messages = [SystemMessage("A"), HumanMessage("q1"), SystemMessage("B"), HumanMessage("q2")]
        assert render_prompt(tokenizer, messages, None) == (
            turn("system", "A\n\nB") + turn("user", "q1") + turn("user", "q2") + ASSISTANT
        )

    @pytest.mark.parametrize(
        "reject",
        [
            "{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}",
            "{% if m.role == 'system' %}{% continue %}",  # drops it silently
        ],
    )
    def test_system_folded_into_user_when_template_has_no_system_role(self, reject) -> None:
        tokenizer = tiny_tokenizer()
        tokenizer.chat_template = (
            "{% for m in messages %}" + reject + "{% endif %}"
            "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
        assert template_default_system_prompt(tokenizer) is None
        pref = f"{PREFERENCE_LABEL}P"
        assert render_prompt(tokenizer, [HumanMessage("q")], "P") == (
            turn("user", f"{pref}\n\nq") + ASSISTANT
        )
        messages = [SystemMessage("S"), HumanMessage("q1"), AIMessage("a1"), HumanMessage("q2")]
        assert render_prompt(tokenizer, messages, "P") == (
            turn("user", f"S\n\n{pref}\n\nq1")
            + turn("assistant", "a1")
            + turn("user", "q2")
            + ASSISTANT
        )
        # A conversation that opens with the assistant gets a user turn for the instructions.
        assert render_prompt(tokenizer, [AIMessage("hello"), HumanMessage("q")], "P") == (
            turn("user", pref) + turn("assistant", "hello") + turn("user", "q") + ASSISTANT
        )

    def test_consecutive_turns_joined_when_template_demands_alternation(self) -> None:
        tokenizer = tiny_tokenizer()
        tokenizer.chat_template = (  # Mistral/Gemma style: roles must alternate
            "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
            "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
        messages = [
            HumanMessage("q1"),
            AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "a"}]),
            ToolMessage("r1", tool_call_id="a"),
            ToolMessage("r2", tool_call_id="a"),
            HumanMessage("q2"),
        ]
        rendered = render_prompt(tokenizer, messages, None)
        assert rendered.count("<|im_start|>user") == 2
        assert "Tool result for f (id a): r1\n\nTool result for f (id a): r2\n\nq2" in rendered
        with pytest.raises(ValueError, match="chat template rejected this conversation"):
            render_prompt(tokenizer, [AIMessage("a"), HumanMessage("q")], None)

    def test_final_ai_message_is_a_finished_turn(self, chatml) -> None:
        messages = [HumanMessage("q"), AIMessage("partial answer")]
        assert render_prompt(chatml, messages, None) == (
            turn("user", "q") + turn("assistant", "partial answer") + ASSISTANT
        )

    def test_research_layout(self, smollm2) -> None:
        assert render_prompt(
            smollm2, [HumanMessage("Why?")], "Be brief.", research_layout=True
        ) == (
            turn("system", SMOLLM2_DEFAULT)
            + turn("user", "Be brief.")
            + turn("assistant", "")
            + turn("user", "Why?")
            + ASSISTANT
        )

    def test_research_layout_multi_turn_with_system(self, chatml) -> None:
        messages = [SystemMessage("S"), HumanMessage("q1"), AIMessage("a1"), HumanMessage("q2")]
        assert render_prompt(chatml, messages, "P", research_layout=True) == (
            turn("system", "S")
            + turn("user", "P")
            + turn("assistant", "")
            + turn("user", "q1")
            + turn("assistant", "a1")
            + turn("user", "q2")
            + ASSISTANT
        )

    def test_tools_described_in_system_prompt(self, chatml) -> None:
        text = render_prompt(chatml, [HumanMessage("q")], "P", tools=[WEATHER_TOOL])
        system = text.split("<|im_end|>")[0]
        assert "- get_weather(city?: string): Weather in a city" in system
        assert "<tool_call>" in system
        assert system.endswith(f"{PREFERENCE_LABEL}P")

    def test_native_tools_template(self) -> None:
        tokenizer = tiny_tokenizer()
        tokenizer.chat_template = NATIVE_TOOLS_TEMPLATE
        messages = [
            HumanMessage("q"),
            AIMessage(
                "", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]
            ),
            ToolMessage("rain", tool_call_id="c1"),
        ]
        text = render_prompt(tokenizer, messages, None, tools=[WEATHER_TOOL])
        assert text.startswith(turn("system", "TOOLS:get_weather;"))
        assert 'CALL get_weather {"city": "Oslo"}' in text
        assert turn("tool", "rain [c1]") in text
        assert "You can call the functions" not in text

    def test_assistant_prefix_and_ids(self, chatml) -> None:
        prefix = tool_call_prefix(WEATHER_TOOL)
        text = render_prompt(chatml, [HumanMessage("q")], None, assistant_prefix=prefix)
        assert text.endswith(ASSISTANT + prefix)
        ids = role_input_ids(chatml, [HumanMessage("q")], None, assistant_prefix=prefix)
        assert chatml.decode(ids) == text
        assert ids[0] == chatml.convert_tokens_to_ids("<|im_start|>")

    def test_no_chat_template(self) -> None:
        tokenizer = tiny_tokenizer()
        tokenizer.chat_template = None
        with pytest.raises(ValueError, match="no chat template"):
            render_prompt(tokenizer, [HumanMessage("q")], None)


class TestToolCalls:
    def test_tool_prompt_signatures(self) -> None:
        tool = {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the web",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "What to look for"},
                        "site": {"type": "string", "enum": ["wiki", "news"]},
                        "limit": {"type": "array", "items": {"type": "integer"}},
                        "filters": {"type": "object", "properties": {"year": {"type": "integer"}}},
                    },
                    "required": ["query"],
                },
            },
        }
        text = tool_prompt([tool])
        assert (
            '- search(query: string, site?: "wiki" | "news", limit?: array of integer, '
            'filters?: {"type": "object", "properties": {"year": {"type": "integer"}}}): '
            "Search the web\n    query: What to look for\n"
        ) in text
        assert text.endswith(
            '<tool_call>\n{"name": "function_name", "arguments": {"argument_name": value}}\n'
            "</tool_call>"
        )

    def test_calls_of_unknown_tools_are_invalid(self) -> None:
        known = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
        unknown = '<tool_call>{"name": "get_wether", "arguments": {"city": "Oslo"}}</tool_call>'
        _, calls, invalid = parse_tool_calls(known + unknown, tool_names=["get_weather"])
        assert [c["name"] for c in calls] == ["get_weather"]
        assert [(c["name"], c["args"]) for c in invalid] == [("get_wether", unknown)]
        assert invalid[0]["error"] == (
            "'get_wether' is not one of the offered tools ['get_weather']."
        )
        _, calls, invalid = parse_tool_calls(known + unknown)  # no names given: both valid
        assert len(calls) == 2 and invalid == []

    def test_valid_calls(self) -> None:
        text = (
            "Checking.\n<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>{"name": "get_time", "parameters": "{\\"tz\\": \\"CET\\"}"}</tool_call>'
        )
        content, calls, invalid = parse_tool_calls(text)
        assert content == "Checking."
        assert [(c["name"], c["args"]) for c in calls] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"tz": "CET"}),
        ]
        assert all(str(c["id"]).startswith("call_") for c in calls)
        assert calls[0]["id"] != calls[1]["id"]
        assert invalid == []

    def test_forced_prefix_round_trip_without_closing_tag(self) -> None:
        text = tool_call_prefix(WEATHER_TOOL) + ' "Rome"}}'
        content, calls, invalid = parse_tool_calls(text)
        assert (content, invalid) == ("", [])
        assert calls[0]["name"] == "get_weather"
        assert calls[0]["args"] == {"city": "Rome"}

    def test_prefix_variants(self) -> None:
        assert tool_call_prefix(None) == '<tool_call>\n{"name": "'
        assert tool_call_prefix(WEATHER_TOOL) == (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city":'
        )
        required_second = {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "required": ["b"],
                },
            },
        }
        assert tool_call_prefix(required_second).endswith('"arguments": {"b":')
        no_arguments = {"type": "function", "function": {"name": "now"}}
        assert tool_call_prefix(no_arguments).endswith('"arguments": {')
        _, calls, _ = parse_tool_calls(tool_call_prefix(no_arguments) + "}}")
        assert calls[0]["args"] == {}

    def test_trailing_text_in_block_is_ignored(self) -> None:
        _, calls, _ = parse_tool_calls(
            '<tool_call>{"name": "f", "arguments": {}}} junk</tool_call>'
        )
        assert calls[0]["args"] == {}

    @pytest.mark.parametrize(
        ("body", "name", "error"),
        [
            ('{"name": "f", "arguments": {"a": }', "f", "not valid JSON"),
            # cut off by max_tokens: the (prefilled) leading name is still reported
            ('\n{"name": "Big", "arguments": {"name": "Ad', "Big", "not valid JSON"),
            ('{"name": "a\\"b", "arguments": {', 'a"b', "not valid JSON"),
            # only a leading "name" is the tool's: here it is an argument
            ('{"arguments": {"name": "x"', None, "not valid JSON"),
            ('["f"]', None, "JSON object"),
            ('{"arguments": {}}', None, "no 'name'"),
            ('{"name": "f", "arguments": "{bad"}', "f", "arguments are not valid JSON"),
            ('{"name": "f", "arguments": [1]}', "f", "must be a JSON object"),
        ],
    )
    def test_invalid_calls(self, body, name, error) -> None:
        content, calls, invalid = parse_tool_calls(f"ok <tool_call>{body}</tool_call>")
        assert content == "ok"
        assert calls == []
        assert len(invalid) == 1
        assert invalid[0]["name"] == name
        assert invalid[0]["args"] == f"<tool_call>{body}</tool_call>"
        assert error in str(invalid[0]["error"])
        assert str(invalid[0]["id"]).startswith("call_")

    def test_no_calls(self) -> None:
        assert parse_tool_calls("just text ") == ("just text", [], [])

    def test_content_grows_monotonically(self) -> None:
        text = 'Sure thing.  \n<tool_call>{"name": "f"}</tool_call> made-up result'
        seen = [tool_call_content(text[:i]) for i in range(len(text) + 1)]
        assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(seen))
        assert seen[-1] == "Sure thing."
        assert tool_call_content("a <tool") == "a"


def pieces(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    @pytest.mark.parametrize(
        ("text", "ended"),
        [
            ("plain answer", False),
            ('<tool_call>{"name": "f"}', False),  # still inside the block
            ('<tool_call>{"name": "f"}</tool_call>', False),
            ('<tool_call>{"name": "f"}</tool_call>\n ', False),  # whitespace only
            ('<tool_call>{"name": "f"}</tool_call>\n<tool_c', False),  # another may follow
            ('<tool_call>{"name": "f"}</tool_call>\n<tool_call>{"na', False),
            ('<tool_call>{"name": "f"}</tool_call>\nThe', True),
            ('<tool_call>{"name": "f"}</tool_call><tool_response>', True),
            ("<tool_call>{}</tool_call>\n<tool_call>{}</tool_call> Done", True),
        ],
    )
    def test_tool_calls_ended(self, text: str, ended: bool) -> None:
        assert tool_calls_ended(text) is ended


class TestTextAssembler:
    def test_without_stops_reproduces_decode(self, chatml) -> None:
        assembler = TextAssembler(chatml)
        text = "Hello, wörld! 👋 done"
        deltas = [assembler.push(i) for i in pieces(chatml, text)]
        deltas.append(assembler.finish())
        assert "".join(deltas) == text == assembler.text
        assert all("\ufffd" not in d for d in deltas)

    def test_incomplete_utf8_is_held_back(self, chatml) -> None:
        assembler = TextAssembler(chatml)
        ids = pieces(chatml, "€")  # three byte tokens
        assert len(ids) == 3
        assert [assembler.push(i) for i in ids] == ["", "", "€"]

    @pytest.mark.parametrize("text", ["a€", "ab🌟", "🌟"])
    def test_finish_drops_a_cut_multibyte_character(self, chatml, text) -> None:
        assembler = TextAssembler(chatml)
        ids = pieces(chatml, text)[:-1]  # generation ended inside the last character
        deltas = [assembler.push(i) for i in ids]
        deltas.append(assembler.finish())
        assert "".join(deltas) == text[:-1] == assembler.text
        assert assembler.token_ids == ids

    def test_multi_token_stop_spanning_tokens(self, chatml) -> None:
        assembler = TextAssembler(chatml, stop=["\nUser:"])
        deltas = [assembler.push(i) for i in pieces(chatml, "Answer.\nUser: more text")]
        assert "".join(deltas) == "Answer." == assembler.text
        assert assembler.stopped
        assert assembler.finish() == ""
        assert assembler.push(pieces(chatml, "x")[0]) == ""

    def test_possible_stop_prefix_is_held_then_released(self, chatml) -> None:
        assembler = TextAssembler(chatml, stop=["STOP"])
        out = [assembler.push(i) for i in pieces(chatml, "a ST")]
        assert "".join(out) == "a "
        assert assembler.push(pieces(chatml, "x")[0]) == "STx"
        assert not assembler.stopped

    def test_held_prefix_released_by_finish(self, chatml) -> None:
        assembler = TextAssembler(chatml, stop=["STOP"])
        out = "".join(assembler.push(i) for i in pieces(chatml, "end ST"))
        assert out == "end "
        assert assembler.finish() == "ST"
        assert assembler.text == "end ST"

    def test_earliest_stop_wins(self, chatml) -> None:
        assembler = TextAssembler(chatml, stop=["world", "lo w"])
        for i in pieces(chatml, "hello world"):
            assembler.push(i)
        assert assembler.text == "hel"

    def test_stop_at_start(self, chatml) -> None:
        assembler = TextAssembler(chatml, stop=["##"])
        assert [assembler.push(i) for i in pieces(chatml, "##x")] == ["", "", ""]
        assert assembler.stopped
        assert assembler.text == ""

    def test_special_tokens_are_skipped(self, chatml) -> None:
        assembler = TextAssembler(chatml)
        ids = [*pieces(chatml, "hi"), chatml.convert_tokens_to_ids("<|im_start|>")]
        assert "".join(assembler.push(i) for i in ids) + assembler.finish() == "hi"
        assert assembler.token_ids == ids

    def test_empty_stop_rejected(self, chatml) -> None:
        with pytest.raises(ValueError, match="non-empty"):
            TextAssembler(chatml, stop=[""])
