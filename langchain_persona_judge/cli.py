"""Command line: ``persona-judge demo`` (also ``python -m langchain_persona_judge demo``).

The demo stores two users' memories in a LangGraph ``InMemoryStore``, asks both the
same questions through ``PersonaProfile(...).personalize(ChatPersonaJudge(...))``,
streams each personalized answer and prints its acceptance statistics.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from langchain_core.messages import AIMessageChunk
from langgraph.store.memory import InMemoryStore
from pydantic import ValidationError

from langchain_persona_judge.chat_models import MAX_SEED, ChatPersonaJudge
from langchain_persona_judge.loading import DEFAULT_MODEL, load_model
from langchain_persona_judge.persona_profile import PersonaProfile

DEMO_USERS: dict[str, list[str]] = {
    "maya": [
        "Is eight years old and loves dinosaurs",
        "Prefers short, simple sentences",
        "Likes a playful, enthusiastic tone",
    ],
    "dr.chen": [  # the "." is not allowed in store namespaces; PersonaProfile encodes it
        "Is a physics professor with deep expertise in optics",
        "Prefers a formal, precise tone",
        "Wants technical detail and correct terminology",
    ],
}
DEFAULT_QUESTIONS = ["Why is the sky blue?", "How do rainbows form?"]

_N = TypeVar("_N", int, float)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona-judge", description="Persona-judge decoding for LangChain."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="answer the same questions for two users with different memories"
    )
    demo.add_argument(
        "--question",
        action="append",
        type=_non_empty,
        help="a question to ask both users (repeatable; default: two built-in questions)",
    )
    demo.add_argument(
        "--max-new-tokens",
        type=_number_in(int, 1, None, "an integer >= 1"),
        default=80,
        help="tokens per answer at most (default 80)",
    )
    demo.add_argument("--model", default=DEFAULT_MODEL, help="model alias, .gguf, folder or id")
    demo.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    demo.add_argument(
        "--judge-weight",
        type=_number_in(float, 0.0, 1.0, "in [0, 1]"),
        default=0.5,
        help="w in [0, 1] (default 0.5)",
    )
    demo.add_argument(
        "--temperature",
        type=_number_in(float, 0.0, None, ">= 0"),
        default=0.7,
        help="0 is greedy (default 0.7)",
    )
    demo.add_argument(
        "--seed",
        type=_number_in(int, 0, MAX_SEED, "an integer in [0, 2**63 - 1]"),
        default=0,
        help="sampling seed (default 0)",
    )
    return parser


def run_demo(args: argparse.Namespace) -> None:
    questions = args.question or DEFAULT_QUESTIONS
    llm = ChatPersonaJudge(  # validates every setting before the weights load
        model=args.model,
        device=args.device,
        max_tokens=args.max_new_tokens,
        judge_weight=args.judge_weight,
        temperature=args.temperature,
        seed=args.seed,
    )
    start = time.perf_counter()
    loaded = load_model(args.model, device=args.device, progress=_status)
    _status(f"Ready in {time.perf_counter() - start:.1f} s: {loaded.name} on {loaded.device}.")

    store = InMemoryStore()
    profile = PersonaProfile(store=store)
    for user_id, memories in DEMO_USERS.items():
        namespace = profile.namespace_for(user_id)
        for index, memory in enumerate(memories):
            store.put(namespace, f"m{index}", {"text": memory})
    chat = profile.personalize(llm)

    for user_id in DEMO_USERS:
        preferences = profile.invoke(user_id)
        print(f"\n=== user {user_id!r} ===")
        print(f"draft persona: {preferences.draft_preference}")
        print(f"judge persona: {preferences.judge_preference}")
        for question in questions:
            print(f"\nQ: {question}\nA: ", end="", flush=True)
            config: Any = {"configurable": {"user_id": user_id}}
            answer = _print_streamed(chat.stream(question, config))
            if answer is not None:
                print(_stats_line(answer))


def _print_streamed(chunks: Iterable[Any]) -> AIMessageChunk | None:
    """Print an answer's text as it streams, then a newline; return the whole answer.

    Trailing whitespace is held back until more text follows, so an answer ending in
    newlines leaves no blank lines before its statistics.
    """
    answer: AIMessageChunk | None = None
    held = ""
    for chunk in chunks:
        if isinstance(chunk, AIMessageChunk):  # str input streams message chunks
            text = held + chunk.text
            settled = text.rstrip()
            held = text[len(settled) :]
            print(settled, end="", flush=True)
            answer = chunk if answer is None else answer + chunk
    print()
    return answer


def _stats_line(answer: AIMessageChunk) -> str:
    stats = answer.response_metadata.get("persona_judge", {})
    output_tokens = answer.usage_metadata["output_tokens"] if answer.usage_metadata else None
    tested = stats.get("accepted", 0) + stats.get("rejected", 0)
    # With no drafted token tested (e.g. a one-token answer) there is no rate to show.
    acceptance = f"{stats['acceptance_rate']:.0%}" if tested else "n/a"
    return (
        f"   [{_count(output_tokens, 'token')}, acceptance {acceptance} "
        f"({stats.get('accepted', 0)} of {tested} drafted tokens tested), "
        f"{_count(stats.get('windows'), 'window')}, "
        f"finish: {answer.response_metadata.get('finish_reason', '?')}]"
    )


def _count(number: object, noun: str) -> str:
    if number is None:
        return f"? {noun}s"
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _number_in(kind: type[_N], low: _N, high: _N | None, requirement: str) -> Callable[[str], _N]:
    """An argparse type: ``text`` as a finite ``kind`` in [low, high], else a clear error."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
        return value

    return parse


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            run_demo(args)
    except ValidationError as error:  # a setting ChatPersonaJudge rejects: its reason only
        reason = error.errors()[0]["msg"].removeprefix("Value error, ")
        parser.exit(2, f"{parser.prog}: error: {reason}\n")
    except (ValueError, OSError, ImportError) as error:  # bad model, device, dtype...
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
