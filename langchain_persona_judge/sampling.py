"""The math of Persona-judge decoding, on probability tensors only (torch, no models).

Notation follows ``docs/method.md``: ``q`` is the draft role's next-token
distribution, ``p`` the judge role's, and ``m`` the target that emitted tokens
follow exactly. Every function here works on rows of shape ``[..., vocab]``.
"""

from __future__ import annotations

from typing import Literal

import torch

Target = Literal["mixture", "geometric"]
TARGETS: tuple[Target, ...] = ("mixture", "geometric")


def logits_to_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Turn logits into probabilities with temperature, top-k and top-p, in that order.

    Temperature 0 (greedy) is treated as 1 here: greedy decoding takes the argmax of
    the blended target, which needs real distributions from both roles, not one-hots.
    """
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1.0:
        logits = logits.masked_fill(_outside_nucleus(logits, top_p), float("-inf"))
    return logits.softmax(dim=-1)


# Sorting a 50k-token vocabulary costs milliseconds per row; the nucleus almost always
# lies within the few hundred most likely tokens, which topk finds ~20x faster.
TOP_P_CANDIDATES = 256


def _outside_nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask of tokens outside the smallest most-likely set whose mass reaches ``top_p``.

    A token is dropped once the mass strictly before it (in descending order) already
    reaches ``top_p``, so the kept set is never empty. A row's mask depends on that row
    alone: the fast path and the full sort compute the same masses the same way, so the
    judge's batched rows and the draft's single row are cut identically.
    """
    probs = logits.softmax(dim=-1)
    candidates = min(TOP_P_CANDIDATES, logits.shape[-1])
    order = logits.topk(candidates, dim=-1).indices  # sorted, descending
    cumulative = probs.gather(-1, order).cumsum(dim=-1)
    if not bool((cumulative[..., -1] >= top_p).all()):
        # Some nucleus is wider than the candidates (a flat distribution): sort fully.
        # The first candidates' masses, and so every narrower row's cut, are unchanged.
        order = logits.sort(dim=-1, descending=True).indices
        cumulative = probs.gather(-1, order).cumsum(dim=-1)
    mass_before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass_before < top_p)
    return ~keep


def target_distribution(
    judge_probs: torch.Tensor, draft_probs: torch.Tensor, judge_weight: float, target: Target
) -> torch.Tensor:
    """The target ``m`` that emitted tokens follow.

    ``mixture``: ``m = w p + (1 - w) q``. ``geometric``: ``m ∝ p^w q^(1-w)``, a product
    of experts. Where the two supports do not overlap (possible after top-k/top-p),
    the geometric target is undefined and that row falls back to the mixture.
    """
    mixture = judge_weight * judge_probs + (1.0 - judge_weight) * draft_probs
    if target == "mixture":
        return mixture
    # torch defines 0**0 == 1, so w = 1 gives p and w = 0 gives q exactly.
    product = judge_probs.pow(judge_weight) * draft_probs.pow(1.0 - judge_weight)
    mass = product.sum(dim=-1, keepdim=True)
    return torch.where(mass > 0, product / mass.clamp_min(1e-30), mixture)


def residual_distribution(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
    """``normalize(max(m - q, 0))``: what to sample after the judge rejects a draft token.

    If ``m == q`` (no mass left) a rejection has probability zero; we return ``m`` so
    that rounding noise can never produce an all-zero distribution.
    """
    return _normalized_positive_part(target_probs - draft_probs, fallback=target_probs)


def research_residual(judge_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
    """The released research code's residual: the sign of ``sum(p - q)`` picks the side.

    Both inputs are normalized, so the sum is zero up to rounding and the branch is
    decided by floating-point noise; with ``max(q - p, 0)`` the token follows ``q``.
    """
    difference = judge_probs - draft_probs
    if difference.sum() <= 0:
        return _normalized_positive_part(-difference, fallback=draft_probs)
    return _normalized_positive_part(difference, fallback=judge_probs)


def _normalized_positive_part(values: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    positive = values.clamp_min(0.0)
    mass = positive.sum(dim=-1, keepdim=True)
    return torch.where(mass > 0, positive / mass.clamp_min(1e-30), fallback)


def acceptance_probability(
    target_probs: torch.Tensor, draft_probs: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """``min(1, m(x) / q(x))`` for each drafted token ``x`` (one per row)."""
    index = tokens.unsqueeze(-1)
    target_mass = target_probs.gather(-1, index).squeeze(-1)
    draft_mass = draft_probs.gather(-1, index).squeeze(-1)
    return (target_mass / draft_mass).clamp(max=1.0)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> int:
    """Draw one token id from a 1-D distribution (on the generator's device if given)."""
    if generator is not None:
        probs = probs.to(generator.device)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def uniforms(count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` draws from U[0, 1) for the accept/reject tests, on the CPU."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(count, generator=generator, device=device).cpu()
