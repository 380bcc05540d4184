"""Persona-judge decoding on tiny models, checked against closed forms and references.

``BigramLM`` makes the exact output distribution computable: the target at every step
depends only on the previous token, so the marginals of emitted tokens follow a Markov
chain whose transition matrix is the blended target. Sampling tests compare empirical
frequencies with it using a total-variation bound; each also checks that the plain
judge and plain draft distributions lie far outside that bound, so the test can fail.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from langchain_persona_judge import decoding
from langchain_persona_judge.decoding import CausalLM, DecodeStats, persona_judge_decode
from langchain_persona_judge.sampling import Target, logits_to_probs, target_distribution
from tests.tiny import BigramLM, pad_head, padded_bigram, random_bigram, tiny_llama

VOCAB = 6
DRAFT_CONTEXT = [1, 4, 0]  # last token 0 conditions the draft's first step
JUDGE_CONTEXT = [3]  # a different length and last token for the judge


def exact_marginals(
    draft: BigramLM, judge: BigramLM, steps: int, weight: float, target: Target, **processing: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position marginals ``[steps, V]`` and the joint of positions 0 and 1.

    Tables are cut to the first ``VOCAB`` ids (the rows and columns a padded head adds
    are not real tokens), a no-op for unpadded models.
    """
    q_rows = logits_to_probs(draft.table[:VOCAB, :VOCAB], **processing).double()
    p_rows = logits_to_probs(judge.table[:VOCAB, :VOCAB], **processing).double()
    transition = target_distribution(p_rows, q_rows, weight, target)
    first = target_distribution(
        p_rows[JUDGE_CONTEXT[-1]], q_rows[DRAFT_CONTEXT[-1]], weight, target
    )
    marginals = [first]
    for _ in range(steps - 1):
        marginals.append(marginals[-1] @ transition)
    return torch.stack(marginals), first.unsqueeze(1) * transition


def empirical(samples: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    steps = len(samples[0])
    marginals = torch.zeros(steps, VOCAB, dtype=torch.float64)
    pairs = torch.zeros(VOCAB, VOCAB, dtype=torch.float64)
    for tokens in samples:
        for position, token in enumerate(tokens):
            marginals[position, token] += 1
        pairs[tokens[0], tokens[1]] += 1
    return marginals / len(samples), pairs / len(samples)


def total_variation(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a - b).abs().sum())


SAMPLING_CASES = [
    dict(gamma=1, judge_weight=0.5, target="mixture", temperature=1.0),
    dict(gamma=3, judge_weight=0.5, target="mixture", temperature=1.0),
    dict(gamma=4, judge_weight=0.3, target="geometric", temperature=0.8, top_k=4),
    dict(gamma=2, judge_weight=0.8, target="mixture", temperature=1.3, top_p=0.8),
    dict(gamma=3, judge_weight=1.0, target="mixture", temperature=1.0),
]


def assert_follows_target(
    draft: BigramLM, judge: BigramLM, case: dict[str, Any], seed: int
) -> torch.Tensor:
    """Decode 4000 times and compare with the exact marginals; return those marginals."""
    steps, draws = 5, 4000
    generator = torch.Generator().manual_seed(seed)
    samples = [
        persona_judge_decode(
            draft, DRAFT_CONTEXT, judge, JUDGE_CONTEXT, max_new_tokens=steps,
            generator=generator, **case,
        ).token_ids
        for _ in range(draws)
    ]  # fmt: skip
    processing = {k: case[k] for k in ("temperature", "top_k", "top_p") if k in case}
    want_marginals, want_pairs = exact_marginals(
        draft, judge, steps, case["judge_weight"], case["target"], **processing
    )
    got_marginals, got_pairs = empirical(samples)
    # E[TV] <= 0.5 * sqrt(cells / draws): 0.019 for 6 cells, 0.047 for 36 cells.
    for position in range(steps):
        assert total_variation(got_marginals[position], want_marginals[position]) < 0.05
    assert total_variation(got_pairs, want_pairs) < 0.08
    return want_marginals


@pytest.mark.parametrize("case", SAMPLING_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_emitted_tokens_follow_the_target_exactly(case: dict[str, Any]) -> None:
    draft, judge = random_bigram(VOCAB, seed=1), random_bigram(VOCAB, seed=2)
    want_marginals = assert_follows_target(draft, judge, case, seed=1234)
    processing = {k: case[k] for k in ("temperature", "top_k", "top_p") if k in case}
    # The bound discriminates: a decoder that sampled one role alone would fail it.
    if 0 < case["judge_weight"] < 1:
        judge_only, _ = exact_marginals(draft, judge, 1, 1.0, "mixture", **processing)
        draft_only, _ = exact_marginals(draft, judge, 1, 0.0, "mixture", **processing)
        assert total_variation(judge_only[0], want_marginals[0]) > 0.1
        assert total_variation(draft_only[0], want_marginals[0]) > 0.1


@pytest.mark.parametrize("weight", [0.25, 0.5, 1.0])
def test_acceptance_rate_equals_overlap_of_target_and_draft(weight: float) -> None:
    draft, judge = random_bigram(VOCAB, seed=3), random_bigram(VOCAB, seed=4)
    generator = torch.Generator().manual_seed(7)
    draws = 4000
    # One token of budget beyond a 1-token window: `accepted` is the first test's outcome.
    accepted = sum(
        persona_judge_decode(
            draft,
            DRAFT_CONTEXT,
            judge,
            JUDGE_CONTEXT,
            max_new_tokens=2,
            gamma=1,
            judge_weight=weight,
            generator=generator,
        ).stats.accepted
        for _ in range(draws)
    )
    q = logits_to_probs(draft.table[DRAFT_CONTEXT[-1]]).double()
    p = logits_to_probs(judge.table[JUDGE_CONTEXT[-1]]).double()
    overlap = float(torch.minimum(target_distribution(p, q, weight, "mixture"), q).sum())
    sigma = (overlap * (1 - overlap) / draws) ** 0.5
    assert abs(accepted / draws - overlap) < 4.5 * sigma + 1e-9


def greedy_reference(
    draft: torch.nn.Module,
    draft_ids: list[int],
    judge: torch.nn.Module,
    judge_ids: list[int],
    steps: int,
    weight: float,
    target: Target,
    vocab: int | None = None,
) -> list[int]:
    """Step-by-step argmax of m, recomputing both roles over the full sequence; with
    ``vocab``, both roles' logits are cut to their first ``vocab`` columns."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            q = draft(torch.tensor([draft_ids + out])).logits[0, -1, :vocab].softmax(-1)
            p = judge(torch.tensor([judge_ids + out])).logits[0, -1, :vocab].softmax(-1)
            out.append(int(target_distribution(p, q, weight, target).argmax()))
    return out


@pytest.mark.parametrize("gamma", [1, 3, 6])
@pytest.mark.parametrize(
    ("weight", "target"), [(0.5, "mixture"), (0.7, "geometric"), (1.0, "mixture")]
)
def test_greedy_equals_stepwise_argmax_of_target(gamma: int, weight: float, target: Target) -> None:
    draft = tiny_llama(32, seed=5, logit_scale=8.0).double()
    judge = tiny_llama(32, seed=6, logit_scale=8.0).double()
    draft_ids, judge_ids = [1, 9, 17, 4, 22, 8, 30, 3], [1, 12]
    want = greedy_reference(draft, draft_ids, judge, judge_ids, 20, weight, target)
    got = persona_judge_decode(
        draft,
        draft_ids,
        judge,
        judge_ids,
        max_new_tokens=20,
        gamma=gamma,
        judge_weight=weight,
        target=target,
        temperature=0,
    )
    assert got.token_ids == want


def test_greedy_with_one_model_in_both_roles() -> None:
    model = tiny_llama(32, seed=8, logit_scale=8.0).double()
    draft_ids, judge_ids = [1, 5, 6, 7, 8], [1, 20, 21]
    want = greedy_reference(model, draft_ids, model, judge_ids, 16, 0.5, "mixture")
    got = persona_judge_decode(model, draft_ids, model, judge_ids, max_new_tokens=16, temperature=0)
    assert got.token_ids == want


def assert_cached_matches_uncached(
    draft: CausalLM, draft_ids: list[int], judge: CausalLM, judge_ids: list[int],
    seed: int, **options: Any,
) -> None:  # fmt: skip
    """Same random stream, with and without KV caches: the same tokens and statistics."""
    cached, uncached = (
        persona_judge_decode(
            draft,
            draft_ids,
            judge,
            judge_ids,
            gamma=3,
            use_cache=use_cache,
            generator=torch.Generator().manual_seed(seed),
            **options,
        )
        for use_cache in (True, False)
    )
    assert cached.stats.rejected > 0  # rollbacks actually happened
    assert cached.token_ids == uncached.token_ids
    assert cached.stats == uncached.stats


@pytest.mark.parametrize("seed", range(4))
def test_cached_decoding_matches_uncached_reference(seed: int) -> None:
    draft = tiny_llama(32, seed=10, logit_scale=3.0).double()
    judge = tiny_llama(32, seed=11, logit_scale=3.0).double()
    assert_cached_matches_uncached(
        draft, [1, 2, 3, 4, 5, 6, 7], judge, [1, 30], seed,
        max_new_tokens=40, temperature=0.9, top_k=20,
    )  # fmt: skip


def sliding_window_model(seed: int) -> MistralForCausalLM:
    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, sliding_window=8,
    )  # fmt: skip
    model = MistralForCausalLM(config).eval().double()
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)
    return model


def test_sliding_window_caches_roll_back_past_the_window() -> None:
    # Contexts and outputs far longer than the 8-token window: rollbacks must cut
    # states the sliding-window layer would otherwise have dropped.
    draft, judge = sliding_window_model(20), sliding_window_model(21)
    assert_cached_matches_uncached(
        draft, list(range(1, 20)), judge, [1, 2, 3], 0, max_new_tokens=30
    )


def test_caches_that_cannot_be_cropped_are_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoding, "_CROPPABLE_LAYERS", ())  # as for linear-attention layers
    draft = tiny_llama(32, seed=10, logit_scale=3.0).double()
    judge = tiny_llama(32, seed=11, logit_scale=3.0).double()
    assert_cached_matches_uncached(draft, [1, 2, 3, 4], judge, [1, 30], 1, max_new_tokens=20)


def chain_model(path: list[int], vocab: int = VOCAB) -> BigramLM:
    """A near-deterministic bigram that walks `path` (each token -> the next one)."""
    logits = torch.full((vocab, vocab), -20.0)
    for a, b in itertools.pairwise(path):
        logits[a, b] = 20.0
    return BigramLM(logits)


def check_accounting(stats: DecodeStats, emitted_ids: list[int], ended_by_eos: bool) -> None:
    assert stats.emitted == len(emitted_ids) + int(ended_by_eos)
    assert stats.accepted + stats.rejected + stats.bonus == stats.emitted


def test_eos_inside_an_accepted_window_ends_the_output() -> None:
    model = chain_model([0, 3, 4, 2, 5, 1])  # 2 is EOS, and the chain goes on after it
    result = persona_judge_decode(
        model, [0], model, [0], max_new_tokens=20, gamma=6, temperature=0, eos_token_id=2
    )
    assert result.token_ids == [3, 4]
    assert result.stats.finish_reason == "stop"
    assert result.stats.windows == 1  # the EOS was inside the first window
    check_accounting(result.stats, result.token_ids, ended_by_eos=True)


def test_eos_given_as_a_list() -> None:
    model = chain_model([0, 3, 4, 5, 1])
    result = persona_judge_decode(
        model, [0], model, [0], max_new_tokens=20, gamma=2, temperature=0, eos_token_id=[2, 5]
    )
    assert result.token_ids == [3, 4]


def test_stop_criterion_inside_an_accepted_window() -> None:
    model = chain_model([0, 3, 4, 1, 5])
    seen: list[list[int]] = []

    def stop_after_four(ids: Sequence[int]) -> bool:
        seen.append(list(ids))
        return ids[-1] == 4

    result = persona_judge_decode(
        model, [0], model, [0], max_new_tokens=20, gamma=5, temperature=0, stop_when=stop_after_four
    )
    assert result.token_ids == [3, 4]
    assert seen == [[3], [3, 4]]
    assert result.stats.finish_reason == "stop"
    check_accounting(result.stats, result.token_ids, ended_by_eos=False)


def test_stop_criterion_cannot_change_the_decode() -> None:
    model = chain_model([0, 3, 4, 1, 5])

    def meddle(ids: Sequence[int]) -> bool:
        if isinstance(ids, list):
            ids.append(0)  # would make the decoder continue from the wrong token
        return False

    plain = persona_judge_decode(model, [0], model, [0], max_new_tokens=4, temperature=0)
    meddled = persona_judge_decode(
        model, [0], model, [0], max_new_tokens=4, temperature=0, stop_when=meddle
    )
    assert plain.token_ids == meddled.token_ids == [3, 4, 1, 5]


@pytest.mark.parametrize("budget", range(1, 8))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_budget_is_never_exceeded_even_below_the_window(budget: int, temperature: float) -> None:
    draft, judge = random_bigram(VOCAB, seed=12), random_bigram(VOCAB, seed=13)
    result = persona_judge_decode(
        draft,
        [0],
        judge,
        [1],
        max_new_tokens=budget,
        gamma=4,
        temperature=temperature,
        generator=torch.Generator().manual_seed(budget),
    )
    assert len(result.token_ids) == budget
    assert result.stats.finish_reason == "length"
    check_accounting(result.stats, result.token_ids, ended_by_eos=False)


def test_budget_of_one_runs_no_draft_window() -> None:
    draft, judge = random_bigram(VOCAB, seed=12), random_bigram(VOCAB, seed=13)
    result = persona_judge_decode(draft, [0], judge, [1], max_new_tokens=1, gamma=4)
    assert result.stats.drafted == 0
    assert (
        result.stats.bonus,
        result.stats.draft_forward_passes,
        result.stats.judge_forward_passes,
    ) == (1, 1, 1)


def test_contexts_of_different_lengths_keep_their_own_positions() -> None:
    model = tiny_llama(32, seed=14, logit_scale=8.0).double()
    short, long = [1, 7], [1, *range(3, 30)]
    want = greedy_reference(model, long, model, short, 12, 0.8, "mixture")
    got = persona_judge_decode(
        model, long, model, short, max_new_tokens=12, gamma=4, temperature=0, judge_weight=0.8
    )
    assert got.token_ids == want
    # Swapping the contexts changes the answer: each role really sees its own context.
    swapped = greedy_reference(model, short, model, long, 12, 0.8, "mixture")
    assert swapped != want


def test_research_mode_swaps_roles_once_and_never_back() -> None:
    first, second = random_bigram(VOCAB, seed=15), random_bigram(VOCAB, seed=16)
    result = persona_judge_decode(
        first,
        [0],
        second,
        [1],
        max_new_tokens=30,
        gamma=3,
        reproduce_research_code=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.stats.windows >= 3
    # Window 1: `first` drafts (3 calls) and `second` judges (1 call); afterwards the
    # roles are swapped for good, so `first` is called once per window as the judge.
    assert len(first.calls) == 3 + (result.stats.windows - 1)
    assert len(second.calls) == 1 + (result.stats.drafted - 3)


def test_research_mode_ignores_eos() -> None:
    model = chain_model([0, 3, 2, 4, 2, 4, 2, 4])
    result = persona_judge_decode(
        model,
        [0],
        model,
        [0],
        max_new_tokens=6,
        temperature=0,
        eos_token_id=2,
        reproduce_research_code=True,
    )
    assert result.token_ids == [3, 2, 4, 2, 4, 2]
    assert result.stats.finish_reason == "length"


def test_research_mode_emits_one_persona_chosen_by_rounding() -> None:
    # First token of a research-mode decode: accepted draft tokens give min(p, q); a
    # rejection resamples max(p - q, 0) or max(q - p, 0) by the sign of sum(p - q),
    # so the token follows p exactly, or q exactly, depending only on rounding.
    def first_step_probs(seed: int) -> tuple[BigramLM, BigramLM, torch.Tensor, torch.Tensor]:
        draft, judge = random_bigram(VOCAB, seed=seed), random_bigram(VOCAB, seed=seed + 100)
        q = logits_to_probs(draft.table[DRAFT_CONTEXT[-1]])
        p = logits_to_probs(judge.table[JUDGE_CONTEXT[-1]])
        return draft, judge, p, q

    cases = [first_step_probs(seed) for seed in range(40)]
    judge_side = next(c for c in cases if (c[2] - c[3]).sum() > 0)
    draft_side = next(c for c in cases if (c[2] - c[3]).sum() <= 0)
    for (draft, judge, p, q), follows_judge in ((judge_side, True), (draft_side, False)):
        generator = torch.Generator().manual_seed(5)
        counts = torch.zeros(VOCAB, dtype=torch.float64)
        draws = 3000
        for _ in range(draws):
            tokens = persona_judge_decode(
                draft,
                DRAFT_CONTEXT,
                judge,
                JUDGE_CONTEXT,
                max_new_tokens=2,
                gamma=1,
                reproduce_research_code=True,
                generator=generator,
            ).token_ids
            counts[tokens[0]] += 1
        want = (p if follows_judge else q).double()
        assert total_variation(counts / draws, want) < 0.05
        assert total_variation(p.double(), q.double()) > 0.15  # p and q are told apart


BAD_SETTINGS = [
    ({"judge_weight": 1.5}, "judge_weight must be in \\[0, 1\\]"),
    ({"judge_weight": -0.1}, "judge_weight must be in \\[0, 1\\]"),
    ({"gamma": 0}, "gamma .* must be an integer >= 1"),
    ({"temperature": -0.5}, "temperature must be a finite number >= 0"),
    ({"temperature": float("inf")}, "temperature must be a finite number >= 0"),
    ({"judge_weight": float("nan")}, "judge_weight must be in \\[0, 1\\]"),
    ({"top_p": 0.0}, "top_p must be None or in \\(0, 1\\]"),
    ({"top_p": 1.2}, "top_p must be None or in \\(0, 1\\]"),
    ({"top_k": 0}, "top_k must be None or an integer >= 1"),
    ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
    ({"target": "harmonic"}, "target must be one of"),
    ({"reproduce_research_code": True, "judge_weight": 0.9}, "leave judge_weight=0.5"),
    ({"eos_token_id": 99}, "eos_token_id has ids \\[99\\] outside the vocabulary \\[0, 6\\)"),
    # True is an int to Python, never a sensible count, weight or token id.
    ({"max_new_tokens": True}, "max_new_tokens must be an integer >= 1"),
    ({"gamma": True}, "gamma .* must be an integer >= 1"),
    ({"top_k": True}, "top_k must be None or an integer >= 1"),
    ({"judge_weight": True}, "judge_weight must be in \\[0, 1\\]"),
    ({"temperature": "0.7"}, "temperature must be a finite number >= 0"),
    ({"top_p": True}, "top_p must be None or in \\(0, 1\\]"),
    ({"eos_token_id": True}, "eos_token_id must be a token id or a sequence of token ids"),
    ({"eos_token_id": [1, "2"]}, "eos_token_id must be a token id or a sequence of token ids"),
    ({"eos_token_id": 2.0}, "eos_token_id must be a token id or a sequence of token ids"),
    ({"reproduce_research_code": "no"}, "reproduce_research_code must be True or False"),
    ({"use_cache": 1}, "use_cache must be True or False"),
    ({"generator": 0}, "generator must be a torch.Generator or None"),
    ({"stop_when": "###"}, "stop_when must be a function of the emitted ids or None"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_bad_settings_fail_fast_with_a_named_setting(
    settings: dict[str, Any], message: str
) -> None:
    model = random_bigram(VOCAB, seed=0)
    with pytest.raises(ValueError, match=message):
        persona_judge_decode(model, [0], model, [0], **settings)
    # One bad request leaves nothing behind: the next one works.
    assert len(persona_judge_decode(model, [0], model, [0], max_new_tokens=3).token_ids) == 3


@pytest.mark.parametrize("which", ["draft_input_ids", "judge_input_ids"])
def test_empty_context_is_rejected(which: str) -> None:
    model = random_bigram(VOCAB, seed=0)
    ids = {"draft_input_ids": [0], "judge_input_ids": [0], which: []}
    with pytest.raises(ValueError, match=f"{which} is empty"):
        persona_judge_decode(model, ids["draft_input_ids"], model, ids["judge_input_ids"])


@pytest.mark.parametrize("which", ["draft_input_ids", "judge_input_ids"])
def test_context_ids_outside_the_vocabulary_are_rejected(which: str) -> None:
    model = random_bigram(VOCAB, seed=0)
    ids = {"draft_input_ids": [0], "judge_input_ids": [0], which: [1, VOCAB, -1]}
    with pytest.raises(ValueError, match=f"{which} has ids \\[-1, {VOCAB}\\] outside"):
        persona_judge_decode(model, ids["draft_input_ids"], model, ids["judge_input_ids"])


def test_unknown_option_is_named() -> None:
    model = random_bigram(VOCAB, seed=0)
    with pytest.raises(TypeError, match="unknown decoding option\\(s\\) \\['max_tokens'\\]"):
        persona_judge_decode(model, [0], model, [0], max_tokens=5)  # type: ignore[call-arg]


def test_prompt_and_budget_beyond_the_context_window_are_rejected() -> None:
    model = tiny_llama(32, seed=0)  # max_position_embeddings=512
    with pytest.raises(ValueError, match=r"judge role's context \(500 tokens.*needs 513 positions"):
        persona_judge_decode(model, [1, 2], model, [1] * 500, max_new_tokens=13)
    assert (
        len(persona_judge_decode(model, [1, 2], model, [1] * 500, max_new_tokens=12).token_ids)
        <= 12
    )


def test_batched_context_is_rejected() -> None:
    model = random_bigram(VOCAB, seed=0)
    with pytest.raises(ValueError, match="one sequence"):
        persona_judge_decode(model, torch.zeros(2, 3, dtype=torch.long), model, [0])


# --- LM heads padded to different sizes (one tokenizer, e.g. Qwen2.5 0.5B vs 7B) -------------

PADDING = 3  # extra head rows; padded_bigram gives them high logits


def padded_pair(padded_role: str, seed: int = 1) -> tuple[BigramLM, BigramLM]:
    """(draft, judge) random bigrams over ``VOCAB`` ids, one of them padded."""
    draft, judge = random_bigram(VOCAB, seed=seed), random_bigram(VOCAB, seed=seed + 1)
    if padded_role == "draft":
        return padded_bigram(draft, PADDING), judge
    return draft, padded_bigram(judge, PADDING)


@pytest.mark.parametrize("padded_role", ["draft", "judge"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_padded_head_works_and_never_emits_padded_ids(padded_role: str, temperature: float) -> None:
    draft, judge = padded_pair(padded_role)
    generator = torch.Generator().manual_seed(0)
    emitted = set()
    for _ in range(200):
        result = persona_judge_decode(
            draft, DRAFT_CONTEXT, judge, JUDGE_CONTEXT, max_new_tokens=8, gamma=3,
            temperature=temperature, generator=generator,
        )  # fmt: skip
        assert len(result.token_ids) == 8
        emitted.update(result.token_ids)
    assert emitted <= set(range(VOCAB))
    # The padded ids carry most of the padded head's mass: an uncut head would emit them.
    padded = draft if padded_role == "draft" else judge
    assert float(padded.table[0].softmax(-1)[VOCAB:].sum()) > 0.5


@pytest.mark.parametrize("padded_role", ["draft", "judge"])
@pytest.mark.parametrize("case", [SAMPLING_CASES[1], SAMPLING_CASES[2]], ids=["plain", "top_k"])
def test_padded_head_emits_the_target_on_the_shared_ids_exactly(
    padded_role: str, case: dict[str, Any]
) -> None:
    # The reference cuts both tables to the VOCAB shared ids itself, before processing.
    assert_follows_target(*padded_pair(padded_role), case, seed=4321)


@pytest.mark.parametrize("padded_role", ["draft", "judge"])
def test_padding_a_head_changes_nothing_when_its_real_logits_are_the_same(
    padded_role: str,
) -> None:
    # A bigram's padded table holds the very same real logits, so the decode is the same
    # token for token and random draw for random draw.
    unpadded = random_bigram(VOCAB, seed=1), random_bigram(VOCAB, seed=2)
    padded = padded_pair(padded_role)
    results = [
        persona_judge_decode(
            draft, DRAFT_CONTEXT, judge, JUDGE_CONTEXT, max_new_tokens=40, gamma=3,
            top_p=0.9, generator=torch.Generator().manual_seed(3),
        )
        for draft, judge in (unpadded, padded)
    ]  # fmt: skip
    assert results[0].token_ids == results[1].token_ids
    assert results[0].stats == results[1].stats


@pytest.mark.parametrize("padded_role", ["draft", "judge"])
@pytest.mark.parametrize("gamma", [1, 4])
def test_greedy_with_a_padded_head_is_stepwise_argmax_on_the_shared_ids(
    padded_role: str, gamma: int
) -> None:
    vocab = 32
    draft = tiny_llama(vocab, seed=5, logit_scale=8.0).double()
    judge = tiny_llama(vocab, seed=6, logit_scale=8.0).double()
    if padded_role == "draft":
        draft = pad_head(draft, 5)
    else:
        judge = pad_head(judge, 5)
    draft_ids, judge_ids = [1, 9, 17, 4, 22, 8, 30, 3], [1, 12]
    want = greedy_reference(draft, draft_ids, judge, judge_ids, 20, 0.5, "mixture", vocab)
    got = persona_judge_decode(
        draft, draft_ids, judge, judge_ids, max_new_tokens=20, gamma=gamma, temperature=0
    )
    assert got.token_ids == want
    assert max(want) < vocab


@pytest.mark.parametrize("padded_role", ["draft", "judge"])
@pytest.mark.parametrize(
    ("ids", "name"),
    [
        ({"eos_token_id": VOCAB + 1}, "eos_token_id"),
        ({"draft_input_ids": [0, VOCAB]}, "draft_input_ids"),
        ({"judge_input_ids": [VOCAB + 2, 1]}, "judge_input_ids"),
    ],
)
def test_ids_beyond_the_shared_vocabulary_are_rejected(
    padded_role: str, ids: dict[str, Any], name: str
) -> None:
    # Valid rows of the padded head, but not ids both heads share.
    draft, judge = padded_pair(padded_role)
    inputs = {"draft_input_ids": [0], "judge_input_ids": [0]} | ids
    with pytest.raises(
        ValueError, match=f"{name} has ids .* outside the vocabulary \\[0, {VOCAB}\\)"
    ):
        persona_judge_decode(
            draft, inputs.pop("draft_input_ids"), judge, inputs.pop("judge_input_ids"), **inputs
        )


@pytest.mark.parametrize(
    "context", [[1.7, 2.2], [True, 5], torch.tensor([1.5, 2.5]), "abc"], ids=repr
)
def test_context_that_is_not_token_ids_is_refused_not_converted(context: Any) -> None:
    model = random_bigram(VOCAB, seed=0)
    with pytest.raises(ValueError, match="judge_input_ids must be a token id or a sequence"):
        persona_judge_decode(model, [0], model, context)


@pytest.mark.parametrize(
    "eos", [3, np.int64(3), torch.tensor(3), torch.tensor([3, 4]), (3, 4)], ids=repr
)
def test_eos_ids_as_numpy_and_tensor_integers(eos: Any) -> None:
    model = chain_model([0, 1, 3, 5])  # 3 ends the answer
    result = persona_judge_decode(
        model, [0], model, [0], max_new_tokens=10, temperature=0, eos_token_id=eos
    )
    assert result.token_ids == [1]
    assert result.stats.finish_reason == "stop"


def test_tensor_contexts_are_accepted() -> None:
    model = random_bigram(VOCAB, seed=0)
    from_list = persona_judge_decode(model, [0, 1], model, [2], temperature=0, max_new_tokens=5)
    from_tensor = persona_judge_decode(
        model, torch.tensor([[0, 1]]), model, torch.tensor([2]), temperature=0, max_new_tokens=5
    )
    assert from_list.token_ids == from_tensor.token_ids


# --- choosing among fixed endings (e.g. tool names) -------------------------------------------


def stepwise_target_log_prob(
    draft: Any, draft_ids: list[int], judge: Any, judge_ids: list[int], ending_length: int,
    weight: float, target: Target,
) -> float:  # fmt: skip
    """Reference: one forward pass per ending token, the target written out by hand."""
    total = 0.0
    for k in range(ending_length, 0, -1):
        with torch.no_grad():
            q = draft(torch.tensor([draft_ids[:-k]])).logits[0, -1].double().softmax(-1)
            p = judge(torch.tensor([judge_ids[:-k]])).logits[0, -1].double().softmax(-1)
        if target == "mixture":
            m = weight * p + (1 - weight) * q
        else:
            product = p**weight * q ** (1 - weight)
            m = product / product.sum()
        total += float(m[judge_ids[-k]].log())
    return total


@pytest.mark.parametrize(
    ("weight", "target"), [(0.5, "mixture"), (0.8, "geometric"), (1.0, "mixture")]
)
def test_ending_log_probs_match_a_stepwise_reference(weight: float, target: Target) -> None:
    vocab = 12
    draft, judge = tiny_llama(vocab, seed=21), tiny_llama(vocab, seed=22)
    draft_context, judge_context = [1, 4, 5], [1, 7, 8, 9, 3]  # different lengths
    endings = [[5, 6, 7], [5, 9], [10, 3, 3, 4]]  # the first two share a token
    scores = decoding.ending_log_probs(
        draft, [draft_context + e for e in endings],
        judge, [judge_context + e for e in endings],
        judge_weight=weight, target=target,
    )  # fmt: skip
    # Only the first two share their first token, so the shared context ends before it and
    # every ending is scored from its first token on.
    expected = [
        stepwise_target_log_prob(
            draft, draft_context + e, judge, judge_context + e, len(e), weight, target
        )
        for e in endings
    ]
    assert scores.tolist() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("padded_role", [None, "draft", "judge"])
def test_single_token_endings_over_the_whole_vocabulary_give_the_target(
    padded_role: str | None,
) -> None:
    vocab = 12
    draft, judge = tiny_llama(vocab, seed=23), tiny_llama(vocab, seed=24)
    if padded_role == "draft":
        draft = pad_head(draft, 4)
    elif padded_role == "judge":
        judge = pad_head(judge, 4)
    scores = decoding.ending_log_probs(
        draft, [[1, 4, v] for v in range(vocab)],
        judge, [[1, 6, 6, v] for v in range(vocab)],
        judge_weight=0.3, target="mixture",
    )  # fmt: skip
    with torch.no_grad():  # a padded head's extra ids are not real tokens: cut them off
        q = draft(torch.tensor([[1, 4]])).logits[0, -1, :vocab].softmax(-1)
        p = judge(torch.tensor([[1, 6, 6]])).logits[0, -1, :vocab].softmax(-1)
    torch.testing.assert_close(scores.exp(), 0.3 * p + 0.7 * q, atol=1e-5, rtol=1e-4)
    assert float(scores.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(
        ValueError, match=f"ids \\[{vocab}\\] outside the vocabulary \\[0, {vocab}\\)"
    ):
        decoding.ending_log_probs(draft, [[1, 2], [1, vocab]], judge, [[1, 2], [1, vocab]])


def test_ending_log_probs_bad_candidates() -> None:
    model = tiny_llama(12, seed=25)
    with pytest.raises(ValueError, match="at least two candidates"):
        decoding.ending_log_probs(model, [[1, 2]], model, [[1, 2]])
    with pytest.raises(ValueError, match="ending is empty"):
        decoding.ending_log_probs(model, [[1, 2], [1, 2, 3]], model, [[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="endings differ between roles"):
        decoding.ending_log_probs(model, [[1, 2], [1, 3]], model, [[1, 4], [1, 5]])
    with pytest.raises(ValueError, match="judge_weight"):
        decoding.ending_log_probs(model, [[1, 2], [1, 3]], model, [[1, 2], [1, 3]], judge_weight=2)


def tokens_fed(model: torch.nn.Module) -> list[int]:
    """Records how many input tokens each forward pass of ``model`` runs."""
    fed: list[int] = []

    def hook(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        fed.append(int(kwargs["input_ids"].shape[-1]))

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return fed


def test_caches_run_only_new_tokens_not_the_whole_sequence() -> None:
    context = [1, *range(3, 30)]  # a long prompt makes re-running it obvious
    gamma = 3
    runs = {}
    for use_cache in (True, False):
        draft, judge = tiny_llama(32, seed=10), tiny_llama(32, seed=11)
        fed = {"draft": tokens_fed(draft), "judge": tokens_fed(judge)}
        result = persona_judge_decode(
            draft, context, judge, context, max_new_tokens=30, gamma=gamma,
            generator=torch.Generator().manual_seed(0), use_cache=use_cache,
        )  # fmt: skip
        runs[use_cache] = (fed, result.stats)
    fed, stats = runs[True]
    assert stats.rejected > 0  # some windows were rolled back
    # With caches each role runs its prompt once, then per window at most the tokens
    # emitted since the last window (<= gamma + 1), its new proposals and one re-fed token.
    for role in ("draft", "judge"):
        assert sum(fed[role]) <= len(context) + stats.windows * (2 * gamma + 2)
    uncached_fed, _ = runs[False]
    assert sum(uncached_fed["judge"]) > len(context) * stats.windows  # the reference re-runs
