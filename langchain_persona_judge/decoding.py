"""Persona-judge decoding over transformers causal LMs.

A *draft* role (one model + its persona-conditioned context) proposes a window of
``gamma`` tokens; a *judge* role (a model + its own context) scores the whole window
in one forward pass; the window is verified token by token against the target ``m``
(``sampling.target_distribution``), so emitted tokens follow ``m`` exactly.

The pieces, one step each:
    ``RoleModel.next_token_logits``  prefill / decode with a KV cache, rolled back on demand,
                                     cut to the vocabulary both roles share
    ``propose``                      the draft's autoregressive window
    ``score``                        the judge's single pass over the window
    ``verify``                       accept / reject / resample
    ``speculative_window``           propose + score + verify + bonus token
    ``stream_persona_judge``         the loop: windows until EOS, a stop, or the budget
    ``ending_log_probs``             the target's probability of fixed endings (choosing
                                     among tool names rather than generating one)
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypedDict, cast

import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
from typing_extensions import Unpack

from langchain_persona_judge.sampling import (
    TARGETS,
    Target,
    acceptance_probability,
    logits_to_probs,
    research_residual,
    residual_distribution,
    sample,
    target_distribution,
    uniforms,
)

StopCriterion = Callable[[Sequence[int]], bool]


class CausalLM(Protocol):
    """The slice of a transformers causal LM the decoder uses; every ``*ForCausalLM`` fits.

    Called as ``model(input_ids=..., cache=..., use_cache=..., logits_to_keep=...)``, it
    returns an output with ``.logits`` of shape ``[1, tokens, vocab]``.
    """

    @property
    def config(self) -> PretrainedConfig: ...

    @property
    def device(self) -> torch.device: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def get_output_embeddings(self) -> Any: ...


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class DecodeSettings:
    """Validated decoding settings shared by every step of one decode."""

    max_new_tokens: int = 128
    gamma: int = 4
    judge_weight: float = 0.5
    target: Target = "mixture"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    eos_token_ids: frozenset[int] = frozenset()
    reproduce_research_code: bool = False

    def __post_init__(self) -> None:
        _check(
            _is_integer(self.max_new_tokens) and self.max_new_tokens >= 1,
            f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}",
        )
        _check(
            _is_integer(self.gamma) and self.gamma >= 1,
            f"gamma (the draft window) must be an integer >= 1, got {self.gamma!r}",
        )
        _check(
            _is_number(self.judge_weight) and 0.0 <= self.judge_weight <= 1.0,
            f"judge_weight must be in [0, 1] (1 = judge only, 0 = draft only), "
            f"got {self.judge_weight!r}",
        )
        _check(self.target in TARGETS, f"target must be one of {TARGETS}, got {self.target!r}")
        _check(
            _is_number(self.temperature)
            and math.isfinite(self.temperature)
            and self.temperature >= 0,
            f"temperature must be a finite number >= 0, got {self.temperature!r}",
        )
        _check(
            self.top_k is None or (_is_integer(self.top_k) and self.top_k >= 1),
            f"top_k must be None or an integer >= 1, got {self.top_k!r}",
        )
        _check(
            self.top_p is None or (_is_number(self.top_p) and 0.0 < self.top_p <= 1.0),
            f"top_p must be None or in (0, 1], got {self.top_p!r}",
        )
        _check(
            isinstance(self.reproduce_research_code, bool),
            f"reproduce_research_code must be True or False, got {self.reproduce_research_code!r}",
        )
        _check(
            not self.reproduce_research_code
            or (self.judge_weight == 0.5 and self.target == "mixture"),
            "reproduce_research_code follows the released code, whose blend is fixed: "
            "leave judge_weight=0.5 and target='mixture' (or turn the reproduction off)",
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The same temperature / top-k / top-p processing for both roles."""
        return logits_to_probs(logits, self.temperature, self.top_k, self.top_p)

    def target_probs(self, judge_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
        if self.reproduce_research_code:
            return judge_probs  # the released code tests against the judge alone
        return target_distribution(judge_probs, draft_probs, self.judge_weight, self.target)

    def residual(
        self, target_probs: torch.Tensor, judge_probs: torch.Tensor, draft_probs: torch.Tensor
    ) -> torch.Tensor:
        if self.reproduce_research_code:
            return research_residual(judge_probs, draft_probs)
        return residual_distribution(target_probs, draft_probs)

    @property
    def bonus_needs_draft(self) -> bool:
        """Whether the bonus token's target depends on the draft distribution."""
        return not self.reproduce_research_code and self.judge_weight < 1.0


@dataclass
class DecodeStats:
    """What one decode did. ``emitted == accepted + rejected + bonus``."""

    drafted: int = 0  # tokens the draft proposed
    accepted: int = 0  # drafted tokens the judge accepted and that were emitted
    rejected: int = 0  # drafted tokens rejected (each replaced by a residual sample)
    bonus: int = 0  # tokens sampled after a fully accepted window
    windows: int = 0
    draft_forward_passes: int = 0
    judge_forward_passes: int = 0
    emitted: int = 0  # tokens generated, including a terminating EOS
    finish_reason: FinishReason = "length"

    @property
    def acceptance_rate(self) -> float:
        """Accepted share of the drafted tokens that were tested (0 when none were)."""
        tested = self.accepted + self.rejected
        return self.accepted / tested if tested else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"acceptance_rate": self.acceptance_rate}


@dataclass
class DecodeResult:
    token_ids: list[int]  # new tokens; a terminating EOS is not included
    stats: DecodeStats


@dataclass
class RoleModel:
    """One role: a model, its own persona-conditioned context, and its own KV cache.

    Draft and judge contexts differ in length, so each role keeps its own cache and
    positions; the same model object may back both roles (one copy of the weights).
    ``vocab`` is the vocabulary both roles share (``shared_vocab_size``): the logits of
    both are cut to it, so ``q``, ``p`` and ``m`` all live on the same ids.
    """

    model: CausalLM
    context: list[int]
    vocab: int
    use_cache: bool = True
    cache: DynamicCache | None = None
    cached_ids: list[int] = field(default_factory=list)  # tokens the cache holds

    def next_token_logits(self, generated: list[int], extra: Sequence[int] = ()) -> torch.Tensor:
        """Logits ``[len(extra) + 1, self.vocab]``: the prediction after ``context +
        generated`` and after each token of ``extra``.

        Only tokens the cache does not already hold are run; a cache that went past
        the shared prefix (tokens the judge rejected) is cropped first.
        """
        sequence = self.context + generated + list(extra)
        last_known = len(self.context) + len(generated) - 1  # must be fed to get its logits
        reuse = min(_common_prefix_length(self.cached_ids, sequence), last_known)
        if not self.use_cache:
            reuse = 0
        elif self.cache is None:
            self.cache = _new_cache(self.model)
        elif reuse < len(self.cached_ids):
            if _can_crop(self.cache):
                # transformers 5 takes a negative count of trailing tokens to drop.
                self.cache.crop(reuse - len(self.cached_ids))
            else:
                self.cache, reuse = _new_cache(self.model), 0
        device = self.model.device
        output = self.model(
            input_ids=torch.tensor([sequence[reuse:]], device=device),
            cache=self.cache,
            use_cache=self.use_cache,
            logits_to_keep=len(extra) + 1,
        )
        if self.use_cache:
            self.cached_ids = sequence
        # The one place logits are cut to the shared vocabulary: before any temperature,
        # top-k or top-p, so a padded head's extra rows (not real tokens) get no mass.
        return output.logits[0, -(len(extra) + 1) :, : self.vocab]


@dataclass
class Proposal:
    tokens: list[int]
    draft_probs: torch.Tensor  # [len(tokens), vocab]: q at each proposed position


@dataclass
class Verdict:
    accepted: int  # how many proposed tokens were accepted, left to right
    replacement: int | None  # the residual sample at the first rejection, if any


@dataclass
class Window:
    tokens: list[int]  # accepted proposals, then the replacement or bonus token
    accepted: int
    rejected: bool


def propose(
    draft: RoleModel,
    generated: list[int],
    gamma: int,
    settings: DecodeSettings,
    generator: torch.Generator | None,
) -> Proposal:
    """The draft samples ``gamma`` tokens autoregressively (greedy: its argmax)."""
    tokens: list[int] = []
    rows: list[torch.Tensor] = []
    for _ in range(gamma):
        probs = settings.probs(draft.next_token_logits(generated + tokens)[-1])
        token = int(probs.argmax()) if settings.greedy else sample(probs, generator)
        tokens.append(token)
        rows.append(probs)
    return Proposal(tokens, torch.stack(rows) if rows else torch.empty(0, draft.vocab))


def score(
    judge: RoleModel, generated: list[int], proposal: Proposal, settings: DecodeSettings
) -> torch.Tensor:
    """One judge pass: ``p`` at each proposed position plus the next one, ``[gamma+1, V]``."""
    return settings.probs(judge.next_token_logits(generated, proposal.tokens))


def verify(
    proposal: Proposal,
    judge_probs: torch.Tensor,
    settings: DecodeSettings,
    generator: torch.Generator | None,
) -> Verdict:
    """Accept proposals left to right while ``u < min(1, m(x)/q(x))``; resample the first
    rejected position from the residual. Greedy accepts while ``x == argmax m``."""
    gamma = len(proposal.tokens)
    judge_probs = judge_probs[:gamma].to(proposal.draft_probs.device)
    targets = settings.target_probs(judge_probs, proposal.draft_probs)
    tokens = torch.tensor(proposal.tokens, device=targets.device)
    if settings.greedy:
        best = targets.argmax(dim=-1)
        for i in range(gamma):
            if tokens[i] != best[i]:
                return Verdict(i, int(best[i]))
        return Verdict(gamma, None)
    accept_probs = acceptance_probability(targets, proposal.draft_probs, tokens).cpu()
    draws = uniforms(gamma, generator)
    for i in range(gamma):
        if draws[i] >= accept_probs[i]:
            residual = settings.residual(targets[i], judge_probs[i], proposal.draft_probs[i])
            return Verdict(i, sample(residual, generator))
    return Verdict(gamma, None)


def speculative_window(
    draft: RoleModel,
    judge: RoleModel,
    generated: list[int],
    gamma: int,
    settings: DecodeSettings,
    generator: torch.Generator | None,
    stats: DecodeStats,
) -> Window:
    """Propose, score and verify one window; emits between 1 and ``gamma + 1`` tokens."""
    proposal = propose(draft, generated, gamma, settings, generator)
    judge_probs = score(judge, generated, proposal, settings)
    stats.draft_forward_passes += gamma
    stats.judge_forward_passes += 1
    verdict = verify(proposal, judge_probs, settings, generator)
    accepted = proposal.tokens[: verdict.accepted]
    if verdict.replacement is not None:
        return Window([*accepted, verdict.replacement], verdict.accepted, rejected=True)

    judge_next = judge_probs[gamma]
    if settings.bonus_needs_draft:
        # The bonus position's target blends in q, which the draft has not computed yet.
        draft_next = settings.probs(draft.next_token_logits(generated + accepted)[-1])
        stats.draft_forward_passes += 1
        bonus_target = settings.target_probs(judge_next, draft_next.to(judge_next.device))
    else:
        bonus_target = judge_next
    bonus = int(bonus_target.argmax()) if settings.greedy else sample(bonus_target, generator)
    return Window([*accepted, bonus], verdict.accepted, rejected=False)


class DecodeOptions(TypedDict, total=False):
    """Keyword options of ``persona_judge_decode`` and ``stream_persona_judge``.

    Defaults are those of ``DecodeSettings``; ``eos_token_id``, ``generator`` and
    ``stop_when`` default to None and ``use_cache`` to True.
    """

    max_new_tokens: int
    gamma: int
    judge_weight: float
    target: Target
    temperature: float
    top_k: int | None
    top_p: float | None
    eos_token_id: int | Iterable[int] | torch.Tensor | None
    generator: torch.Generator | None
    stop_when: StopCriterion | None
    reproduce_research_code: bool
    use_cache: bool


_SETTING_NAMES = frozenset(DecodeSettings.__dataclass_fields__) - {"eos_token_ids"}


def stream_persona_judge(
    draft_model: CausalLM,
    draft_input_ids: torch.Tensor | Sequence[int],
    judge_model: CausalLM,
    judge_input_ids: torch.Tensor | Sequence[int],
    **options: Unpack[DecodeOptions],
) -> Generator[int, None, DecodeStats]:
    """Persona-judge decoding, yielding each new token id as soon as it is final.

    The generator's return value (``stats = yield from ...``) is the ``DecodeStats``.
    Settings are validated before the first token, so bad input fails fast here.
    See ``persona_judge_decode`` for the arguments.
    """
    unknown = sorted(set(options) - set(DecodeOptions.__annotations__))
    if unknown:
        raise TypeError(
            f"unknown decoding option(s) {unknown}; "
            f"known options: {sorted(DecodeOptions.__annotations__)}"
        )
    settings_values: dict[str, Any] = {k: v for k, v in options.items() if k in _SETTING_NAMES}
    settings = DecodeSettings(
        eos_token_ids=_eos_ids(options.get("eos_token_id")), **settings_values
    )
    use_cache = options.get("use_cache", True)
    _check(isinstance(use_cache, bool), f"use_cache must be True or False, got {use_cache!r}")
    generator, stop_when = options.get("generator"), options.get("stop_when")
    _check(
        generator is None or isinstance(generator, torch.Generator),
        f"generator must be a torch.Generator or None, got {generator!r}",
    )
    _check(
        stop_when is None or callable(stop_when),
        f"stop_when must be a function of the emitted ids or None, got {stop_when!r}",
    )
    vocab = shared_vocab_size(draft_model, judge_model)
    draft_ids = _as_token_list(draft_input_ids, "draft_input_ids")
    judge_ids = _as_token_list(judge_input_ids, "judge_input_ids")
    for name, ids in (("eos_token_id", settings.eos_token_ids),
                      ("draft_input_ids", draft_ids), ("judge_input_ids", judge_ids)):  # fmt: skip
        _check_in_vocab(name, ids, vocab)
    draft = RoleModel(draft_model, draft_ids, vocab, use_cache)
    judge = RoleModel(judge_model, judge_ids, vocab, use_cache)
    for name, role in (("draft", draft), ("judge", judge)):
        _check_fits_context(name, role, settings.max_new_tokens)
    return _decode(draft, judge, settings, generator, stop_when)


def persona_judge_decode(
    draft_model: CausalLM,
    draft_input_ids: torch.Tensor | Sequence[int],
    judge_model: CausalLM,
    judge_input_ids: torch.Tensor | Sequence[int],
    **options: Unpack[DecodeOptions],
) -> DecodeResult:
    """Generate with Persona-judge decoding; return the new token ids and statistics.

    Args:
        draft_model, draft_input_ids: the proposing role: a causal LM and its context
            (the prompt rendered with the draft persona). 1-D ids or shape ``[1, L]``.
        judge_model, judge_input_ids: the verifying role. May be the same model object.
            Both models must share a tokenizer, but their LM heads may differ in padding
            (rows past the tokenizer, e.g. 151936 vs 152064 in Qwen2.5): only the ids
            both heads have are ever scored or emitted (``shared_vocab_size``).
        max_new_tokens: hard cap on generated tokens (a terminating EOS counts); 128.
        gamma: tokens the draft proposes per window; 4.
        judge_weight: ``w`` in [0, 1]; 1 = lossless sampling of the judge, 0 = draft
            only; 0.5.
        target: ``"mixture"`` (``w p + (1-w) q``, default) or ``"geometric"``
            (``∝ p^w q^(1-w)``).
        temperature, top_k, top_p: applied identically to both roles' distributions;
            temperature 0 is greedy (``argmax m`` at each position); 1.0, None, None.
        eos_token_id: token id(s) that end generation; not included in the output.
        generator: a ``torch.Generator`` for reproducible sampling.
        stop_when: called with all emitted ids after each token; ``True`` stops.
        reproduce_research_code: behave like the released research code (judge-only
            test, sign-chosen residual, draft/judge roles swapped once after the first
            window, EOS ignored) for comparisons; not exact for any target. Greedy
            decoding in this mode is the judge's greedy decoding.
        use_cache: ``False`` re-runs whole sequences each step (a slow reference).
    """
    stream = stream_persona_judge(
        draft_model, draft_input_ids, judge_model, judge_input_ids, **options
    )
    token_ids: list[int] = []
    while True:
        try:
            token_ids.append(next(stream))
        except StopIteration as finished:
            return DecodeResult(token_ids, finished.value)


@torch.inference_mode()
def ending_log_probs(
    draft_model: CausalLM,
    draft_candidates: Sequence[Sequence[int]],
    judge_model: CausalLM,
    judge_candidates: Sequence[Sequence[int]],
    *,
    judge_weight: float = 0.5,
    target: Target = "mixture",
) -> torch.Tensor:
    """Log-probability under the target ``m`` of each candidate's ending, ``[n]``.

    Each role gives one id list per candidate: its own context, then the candidate's
    ending, which starts where that role's lists first differ (the endings must be the
    same tokens in both roles). ``m`` is built from untempered distributions, so
    ``softmax`` of the result is ``m`` restricted to the candidates: drawing from it
    picks among fixed texts (a tool name among the offered ones) as the decoder would if
    only those could be written.
    """
    DecodeSettings(judge_weight=judge_weight, target=target)  # validates both
    _check(len(draft_candidates) == len(judge_candidates), "one id list per role per candidate")
    vocab = shared_vocab_size(draft_model, judge_model)
    for name, candidates in (("draft_candidates", draft_candidates),
                             ("judge_candidates", judge_candidates)):  # fmt: skip
        _check_in_vocab(name, [i for ids in candidates for i in ids], vocab)
    draft_start, judge_start = _shared_length(draft_candidates), _shared_length(judge_candidates)
    # Each role's shared context is run once; its cache is cropped back after each ending.
    draft = RoleModel(draft_model, list(draft_candidates[0][:draft_start]), vocab)
    judge = RoleModel(judge_model, list(judge_candidates[0][:judge_start]), vocab)
    scores = []
    for draft_ids, judge_ids in zip(draft_candidates, judge_candidates, strict=True):
        ending = list(judge_ids[judge_start:])
        _check(bool(ending), "a candidate's ending is empty: no candidate may be another's prefix")
        _check(list(draft_ids[draft_start:]) == ending, "candidate endings differ between roles")
        probs = target_distribution(
            _ending_probs(judge, ending), _ending_probs(draft, ending), judge_weight, target
        )
        ending_ids = torch.tensor(ending, device=probs.device)[:, None]
        scores.append(probs.gather(-1, ending_ids).log().sum().cpu())
    return torch.stack(scores)


def _shared_length(candidates: Sequence[Sequence[int]]) -> int:
    """Length of the context the candidates share (their longest common prefix, >= 1)."""
    _check(len(candidates) >= 2, "give at least two candidates to choose among")
    first = list(candidates[0])
    shared = min(_common_prefix_length(first, list(other)) for other in candidates[1:])
    _check(shared >= 1, "the candidates share no context: start each with the prompt")
    return shared


def _ending_probs(role: RoleModel, ending: list[int]) -> torch.Tensor:
    """Untempered next-token distributions at each position of ``ending`` after the context."""
    return role.next_token_logits([], ending)[:-1].float().softmax(dim=-1)


@torch.inference_mode()
def _decode(
    draft: RoleModel,
    judge: RoleModel,
    settings: DecodeSettings,
    generator: torch.Generator | None,
    stop_when: StopCriterion | None,
) -> Generator[int, None, DecodeStats]:
    stats = DecodeStats()
    generated: list[int] = []
    stop_on_eos = not settings.reproduce_research_code  # the released code ignores EOS
    while stats.emitted < settings.max_new_tokens:
        # A window emits up to gamma + 1 tokens: shrink it to fit the budget.
        gamma = min(settings.gamma, settings.max_new_tokens - stats.emitted - 1)
        window = speculative_window(draft, judge, generated, gamma, settings, generator, stats)
        stats.windows += 1
        stats.drafted += gamma
        for index, token in enumerate(window.tokens):
            stats.emitted += 1
            if index < window.accepted:
                stats.accepted += 1
            elif window.rejected:
                stats.rejected += 1
            else:
                stats.bonus += 1
            if stop_on_eos and token in settings.eos_token_ids:
                stats.finish_reason = "stop"
                return stats
            generated.append(token)
            yield token
            # A copy: a callback that edits what it is given cannot corrupt the decode.
            if stop_when is not None and stop_when(tuple(generated)):
                stats.finish_reason = "stop"
                return stats
        if settings.reproduce_research_code and stats.windows == 1:
            draft, judge = judge, draft  # swap once, never back
    return stats


# Layers whose keys/values can be cut back to any earlier length. Others (linear
# attention, recurrent states) are rebuilt from the start instead: slow but exact.
_CROPPABLE_LAYERS: tuple[type, ...] = (DynamicLayer, DynamicSlidingWindowLayer)


def _new_cache(model: CausalLM) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    # Sliding-window layers drop old states unless asked to keep them for rollbacks.
    cache.activate_past_recording()
    return cache


def _can_crop(cache: DynamicCache) -> bool:
    return all(type(layer) in _CROPPABLE_LAYERS for layer in cache.layers)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# ``True`` is an int to Python; as a count, weight or token id it is surely a mistake.
def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_token_list(input_ids: torch.Tensor | Sequence[int], name: str) -> list[int]:
    if isinstance(input_ids, torch.Tensor):
        _check(
            input_ids.dim() == 1 or (input_ids.dim() == 2 and input_ids.shape[0] == 1),
            f"{name} must be 1-D or of shape [1, length] (one sequence), "
            f"got shape {tuple(input_ids.shape)}",
        )
        input_ids = input_ids.reshape(-1)
    ids = _token_ids(input_ids, name)
    _check(len(ids) > 0, f"{name} is empty: give at least one context token (e.g. a BOS)")
    return ids


def _eos_ids(eos_token_id: int | Iterable[int] | torch.Tensor | None) -> frozenset[int]:
    if eos_token_id is None:
        return frozenset()
    return frozenset(_token_ids(eos_token_id, "eos_token_id"))


def _token_ids(value: object, name: str) -> list[int]:
    """Token ids from one integer, a sequence of integers or an integer tensor.

    Floats, booleans and strings are refused rather than converted: ``int(1.7)`` would
    quietly decode from another token than the one meant.
    """
    if isinstance(value, torch.Tensor):
        value = value.tolist()  # numbers keep their kind: a float tensor gives floats
    is_sequence = isinstance(value, Iterable) and not isinstance(value, (str, bytes))
    items: list[Any] = list(cast(Iterable[Any], value)) if is_sequence else [value]
    _check(
        all(_is_integer(i) for i in items),
        f"{name} must be a token id or a sequence of token ids (integers), "
        f"got {reprlib.repr(value)}",
    )
    return [int(i) for i in items]


def vocab_size(model: CausalLM) -> int:
    """Rows of the LM head: the ids the model can emit (may exceed the tokenizer's)."""
    output_embeddings = model.get_output_embeddings()
    if isinstance(output_embeddings, torch.nn.Linear):
        return output_embeddings.out_features
    return int(model.config.get_text_config().vocab_size)


def shared_vocab_size(draft_model: CausalLM, judge_model: CausalLM) -> int:
    """The ids both roles can score: the smaller LM head.

    Models that share a tokenizer often pad their heads to different sizes (a multiple
    of 64 or 128 rows); the rows past the tokenizer are not real tokens, so both roles
    are cut to the first ``shared`` ids and nothing at or above it is ever emitted.
    Whether the tokenizers themselves agree is ``loading.check_same_tokenizer``'s job.
    """
    return min(vocab_size(draft_model), vocab_size(judge_model))


def _check_in_vocab(name: str, ids: Iterable[int], vocab: int) -> None:
    bad = sorted({i for i in ids if not 0 <= i < vocab})
    _check(
        not bad,
        f"{name} has ids {bad[:5]} outside the vocabulary [0, {vocab}) "
        "that the draft and judge heads share",
    )


def _check_fits_context(name: str, role: RoleModel, max_new_tokens: int) -> None:
    """Positions past the model's context are not truncated silently: refuse up front."""
    limit = getattr(role.model.config.get_text_config(), "max_position_embeddings", None)
    needed = len(role.context) + max_new_tokens
    _check(
        limit is None or needed <= limit,
        f"the {name} role's context ({len(role.context)} tokens) plus max_new_tokens "
        f"({max_new_tokens}) needs {needed} positions, more than the model's context of "
        f"{limit}: shorten the context (in ChatPersonaJudge: the conversation or the "
        "preference) or lower max_new_tokens (max_tokens in ChatPersonaJudge)",
    )


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    if b[: len(a)] == a:
        return len(a)
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length
