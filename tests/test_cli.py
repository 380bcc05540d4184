"""``persona-judge demo`` on a tiny model: both users answered, with their statistics."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from langchain_core.messages import AIMessageChunk

from langchain_persona_judge import chat_models, cli
from langchain_persona_judge.loading import LoadedModel
from tests.tiny import tiny_llama, tiny_tokenizer


@pytest.fixture
def tiny_everywhere(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer), seed=0, logit_scale=4.0)
    loaded = LoadedModel(model, tokenizer, "tiny", torch.device("cpu"), torch.float32)
    requests: list[dict[str, Any]] = []

    def fake_load_model(model: str, **kwargs: Any) -> LoadedModel:
        requests.append({"model": model, **kwargs})
        return loaded

    monkeypatch.setattr(cli, "load_model", fake_load_model)
    monkeypatch.setattr(chat_models, "load_model", fake_load_model)
    return requests


def test_demo_answers_every_question_for_both_users(
    tiny_everywhere: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["demo", "--question", "Why?", "--question", "How?", "--max-new-tokens", "5"])
    out, err = capsys.readouterr()
    assert "Ready in" in err  # the visible loading message
    for user in cli.DEMO_USERS:
        assert f"=== user {user!r} ===" in out
    assert out.count("Q: Why?") == 2 and out.count("Q: How?") == 2
    stats_lines = [line for line in out.splitlines() if "acceptance" in line]
    assert len(stats_lines) == 4
    assert all(
        line.strip().startswith("[5 tokens") or "finish: stop" in line for line in stats_lines
    )
    # Each user's personas come from their own memories.
    assert "dinosaurs" in out.split("=== user 'dr.chen' ===")[0]
    assert "physics professor" in out.split("=== user 'dr.chen' ===")[1]


def test_demo_passes_model_and_device_flags(tiny_everywhere: list[dict[str, Any]]) -> None:
    cli.main(["demo", "--question", "Hi", "--max-new-tokens", "2", "--model", "m.gguf",
              "--device", "cpu"])  # fmt: skip
    assert {r["model"] for r in tiny_everywhere} == {"m.gguf"}
    assert {r["device"] for r in tiny_everywhere} == {"cpu"}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (["demo", "--max-new-tokens", "0"], "must be an integer >= 1, got 0"),
        (["demo", "--max-new-tokens", "abc"], "expected an integer, got 'abc'"),
        (["demo", "--seed", "x"], "expected an integer, got 'x'"),
        (["demo", "--seed", "-1"], "must be an integer in [0, 2**63 - 1], got -1"),
        (["demo", "--judge-weight", "2"], "must be in [0, 1], got 2.0"),
        (["demo", "--judge-weight", "nan"], "must be a finite number, got 'nan'"),
        (["demo", "--temperature", "-1"], "must be >= 0, got -1.0"),
        (["demo", "--temperature", "inf"], "must be a finite number, got 'inf'"),
        (["demo", "--question", " "], "must not be empty"),
        ([], "required: command"),
    ],
)
def test_bad_arguments_exit_with_usage(
    bad: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(bad)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: persona-judge" in err
    assert reason in err


def test_runtime_errors_are_one_line_not_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--model", "/no/such/model.gguf"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("persona-judge: error: ") and "/no/such/model.gguf" in err
    assert "Traceback" not in err


def test_bad_device_is_refused_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--device", "tpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("persona-judge: error: ") and "tpu" in err
    assert "Loading" not in err and "alidation error" not in err and "Value error" not in err
    assert len(err.strip().splitlines()) == 1


def test_streamed_answer_keeps_inner_whitespace_and_drops_trailing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pieces = ["Hello", " \n", "world", "\n\n", " "]
    answer = cli._print_streamed(AIMessageChunk(content=piece) for piece in pieces)
    assert capsys.readouterr().out == "Hello \nworld\n"
    assert answer is not None and answer.text == "Hello \nworld\n\n "  # the message is whole


def stats_answer(tokens: int, windows: int, accepted: int, rejected: int) -> AIMessageChunk:
    tested = accepted + rejected
    return AIMessageChunk(
        content="x",
        usage_metadata={"input_tokens": 4, "output_tokens": tokens, "total_tokens": 4 + tokens},
        response_metadata={
            "finish_reason": "stop",
            "persona_judge": {"windows": windows, "accepted": accepted, "rejected": rejected,
                              "acceptance_rate": accepted / tested if tested else 0.0},
        },
    )  # fmt: skip


def test_stats_line_counts_tokens_and_windows() -> None:
    line = cli._stats_line(stats_answer(tokens=5, windows=3, accepted=3, rejected=1))
    assert line.strip() == (
        "[5 tokens, acceptance 75% (3 of 4 drafted tokens tested), 3 windows, finish: stop]"
    )
    line = cli._stats_line(stats_answer(tokens=1, windows=1, accepted=0, rejected=0))
    assert line.strip() == (
        "[1 token, acceptance n/a (0 of 0 drafted tokens tested), 1 window, finish: stop]"
    )
