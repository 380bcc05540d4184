"""The pure math, checked against values worked out by hand."""

import pytest
import torch

from langchain_persona_judge.sampling import (
    acceptance_probability,
    logits_to_probs,
    research_residual,
    residual_distribution,
    target_distribution,
)

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
LOGITS = PROBS.log()


def test_temperature_divides_logits() -> None:
    expected = (LOGITS / 0.5).softmax(-1)
    assert torch.allclose(logits_to_probs(LOGITS, temperature=0.5).double(), expected, atol=1e-6)


def test_temperature_zero_leaves_distribution_unscaled() -> None:
    assert torch.allclose(logits_to_probs(LOGITS, temperature=0).double(), PROBS, atol=1e-6)


def test_top_k_keeps_the_k_largest() -> None:
    out = logits_to_probs(LOGITS, top_k=2).double()
    assert torch.allclose(out, torch.tensor([0.625, 0.375, 0, 0], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [(0.4, [0]), (0.7, [0, 1]), (0.8, [0, 1]), (0.81, [0, 1, 2]), (1.0, [0, 1, 2, 3])],
)
def test_top_p_keeps_smallest_prefix_reaching_mass(top_p: float, kept: list[int]) -> None:
    # Shuffle the order so the test also checks the scatter back to vocabulary order.
    order = torch.tensor([2, 0, 3, 1])
    out = logits_to_probs(LOGITS[order], top_p=top_p).double()
    expected = torch.zeros(4, dtype=torch.float64)
    expected[kept] = PROBS[kept] / PROBS[kept].sum()
    assert torch.allclose(out, expected[order], atol=1e-6)


P = torch.tensor([0.7, 0.2, 0.1, 0.0], dtype=torch.float64)
Q = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)


def test_mixture_target() -> None:
    expected = torch.tensor([0.52, 0.2, 0.16, 0.12], dtype=torch.float64)  # 0.7 p + 0.3 q
    assert torch.allclose(target_distribution(P, Q, 0.7, "mixture"), expected)


def test_geometric_target() -> None:
    # p^0.5 q^0.5 = [sqrt(.07), .2, sqrt(.03), 0], normalized by hand.
    raw = torch.tensor([0.07**0.5, 0.2, 0.03**0.5, 0.0], dtype=torch.float64)
    assert torch.allclose(target_distribution(P, Q, 0.5, "geometric"), raw / raw.sum())


@pytest.mark.parametrize("target", ["mixture", "geometric"])
def test_endpoint_weights_give_one_role_exactly(target: str) -> None:
    assert torch.allclose(target_distribution(P, Q, 1.0, target), P, rtol=0, atol=1e-12)  # type: ignore[arg-type]
    assert torch.allclose(target_distribution(P, Q, 0.0, target), Q, rtol=0, atol=1e-12)  # type: ignore[arg-type]


def test_geometric_with_disjoint_supports_falls_back_to_mixture() -> None:
    p = torch.tensor([1.0, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(
        target_distribution(p, q, 0.25, "geometric"), torch.tensor([0.25, 0.75]).double()
    )


def test_residual_is_positive_part_of_difference() -> None:
    m = target_distribution(P, Q, 0.5, "mixture")  # [0.4, 0.2, 0.2, 0.2]
    expected = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # max(m - q, 0) = [.3,0,0,0]
    assert torch.allclose(residual_distribution(m, Q), expected)


def test_residual_of_equal_distributions_is_the_target() -> None:
    assert torch.equal(residual_distribution(Q, Q), Q)


def test_acceptance_probability_is_min_one_ratio() -> None:
    tokens = torch.tensor([0, 1, 3])
    rows = torch.stack([P, P, P])
    drafts = torch.stack([Q, Q, Q])
    expected = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)  # 7 -> 1, 1, 0/0.4
    assert torch.allclose(acceptance_probability(rows, drafts, tokens), expected)


def test_research_residual_branch_follows_the_sign_of_the_sum() -> None:
    q = torch.tensor([0.3, 0.7], dtype=torch.float64)
    judge_heavier = torch.tensor([0.6, 0.4 + 1e-3], dtype=torch.float64)  # sum(p - q) > 0
    judge_lighter = torch.tensor([0.6, 0.4 - 1e-3], dtype=torch.float64)  # sum(p - q) < 0
    # sum > 0 -> max(p - q, 0) = [0.3, 0]; sum <= 0 -> max(q - p, 0) = [0, 0.301]
    assert torch.allclose(research_residual(judge_heavier, q), torch.tensor([1.0, 0.0]).double())
    assert torch.allclose(research_residual(judge_lighter, q), torch.tensor([0.0, 1.0]).double())


def test_research_residual_branch_is_decided_by_rounding_noise() -> None:
    # With normalized float32 inputs the sum is zero up to rounding, so both branches
    # fire often: the research code effectively flips a coin between p- and q-residuals.
    generator = torch.Generator().manual_seed(0)
    judge_side = 0
    trials = 400
    for _ in range(trials):
        p = torch.rand(50, generator=generator).softmax(-1)
        q = torch.rand(50, generator=generator).softmax(-1)
        residual = research_residual(p, q)
        judge_side += bool(torch.allclose(residual, residual_distribution(p, q)))
    assert 0.2 * trials < judge_side < 0.8 * trials


def nucleus_reference(probs: list[float], top_p: float) -> set[int]:
    """Smallest set of most likely tokens whose mass reaches top_p, by a plain loop."""
    kept: set[int] = set()
    mass = 0.0
    for index in sorted(range(len(probs)), key=lambda i: -probs[i]):
        if mass >= top_p:
            break
        kept.add(index)
        mass += probs[index]
    return kept


@pytest.mark.parametrize(
    ("scale", "top_p"),
    [(4.0, 0.9), (4.0, 0.5), (0.01, 0.9), (0.01, 0.2)],  # peaked: topk path; flat: full sort
)
def test_top_p_on_a_large_vocabulary_matches_a_plain_loop(scale: float, top_p: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = scale * torch.randn(3, 5000, generator=generator, dtype=torch.float64)
    out = logits_to_probs(logits, top_p=top_p)
    for row in range(3):
        probs = logits[row].float().softmax(-1).tolist()
        assert set(out[row].nonzero().flatten().tolist()) == nucleus_reference(probs, top_p)


def test_top_p_cut_of_a_row_does_not_depend_on_the_other_rows() -> None:
    # The judge scores a whole window in one batch, the draft one row at a time: a row
    # must be cut the same whether a flat neighbour forces the full-sort path or not.
    generator = torch.Generator().manual_seed(1)
    peaked = 4.0 * torch.randn(1, 5000, generator=generator)
    flat = 0.01 * torch.randn(1, 5000, generator=generator)
    alone = logits_to_probs(peaked, top_p=0.9)
    beside_flat = logits_to_probs(torch.cat([peaked, flat]), top_p=0.9)
    assert torch.equal(alone[0], beside_flat[0])
    probs = peaked[0].softmax(-1).tolist()
    assert set(alone[0].nonzero().flatten().tolist()) == nucleus_reference(probs, 0.9)
