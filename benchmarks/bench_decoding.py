"""Speed of Persona-judge decoding relative to plain ``generate``, measured in one run.

    python benchmarks/bench_decoding.py [--max-new-tokens 64] [--device cpu]

Prints, per setting, our tokens/s divided by plain greedy ``model.generate`` tokens/s
on the same judge prompts, the acceptance rate, and forward passes per emitted token.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, cast

import torch
from transformers import GenerationMixin, PreTrainedTokenizerBase

from langchain_persona_judge.decoding import persona_judge_decode
from langchain_persona_judge.loading import DEFAULT_MODEL, load_model

QUESTIONS = [
    "How do I make a cup of tea?",
    "What is photosynthesis?",
    "Give me a tip for learning a new language.",
]
DRAFT_PREFERENCE = "The user likes a friendly, enthusiastic tone."
JUDGE_PREFERENCE = "The user wants short, precise answers."


def chat_ids(tokenizer: PreTrainedTokenizerBase, preference: str, question: str) -> list[int]:
    messages = [
        {
            "role": "system",
            "content": f"You are a helpful assistant. User preference: {preference}",
        },
        {"role": "user", "content": question},
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default=None)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    loaded = load_model(args.model, device=args.device, progress=print)
    model, tokenizer = loaded.model, loaded.tokenizer
    generate = cast(GenerationMixin, model).generate
    prompts = [
        (chat_ids(tokenizer, DRAFT_PREFERENCE, q), chat_ids(tokenizer, JUDGE_PREFERENCE, q))
        for q in QUESTIONS
    ]
    # Plain generate must run to the same length: EOS is disabled on both sides.
    budget = args.max_new_tokens

    def plain_generate() -> int:
        emitted = 0
        for _, judge_ids in prompts:
            ids = torch.tensor([judge_ids], device=loaded.device)
            out = generate(ids, max_new_tokens=budget, min_new_tokens=budget, do_sample=False)
            emitted += out.shape[1] - ids.shape[1]
        return emitted

    generate(torch.tensor([prompts[0][1]], device=loaded.device), max_new_tokens=4)  # warm-up
    start = time.perf_counter()
    baseline_tokens = plain_generate()
    baseline_rate = baseline_tokens / (time.perf_counter() - start)
    print(f"\nmodel={loaded.name} device={loaded.device} dtype={loaded.dtype} budget={budget}")
    print(f"plain generate (greedy): {baseline_rate:.1f} tokens/s\n")
    print(f"{'setting':<62} {'tok/s':>7} {'ratio':>6} {'accept':>7} {'passes/tok':>10}")

    settings: list[dict[str, Any]] = [
        dict(judge_weight=1.0, gamma=4, temperature=0.0),
        dict(judge_weight=0.5, gamma=4, temperature=0.0),
        dict(judge_weight=0.5, gamma=2, temperature=0.7, top_p=0.9),
        dict(judge_weight=0.5, gamma=4, temperature=0.7, top_p=0.9),
        dict(judge_weight=0.5, gamma=6, temperature=0.7, top_p=0.9),
        dict(judge_weight=0.5, gamma=4, temperature=0.7, target="geometric"),
        dict(reproduce_research_code=True, gamma=4, temperature=0.9, top_k=20, top_p=0.9),
        # Re-running whole sequences each step, as the released research code does:
        dict(judge_weight=0.5, gamma=4, temperature=0.7, top_p=0.9, use_cache=False),
    ]
    for setting in settings:
        generator = torch.Generator(device=loaded.device).manual_seed(0)
        emitted = accepted = tested = passes = 0
        start = time.perf_counter()
        for draft_ids, judge_ids in prompts:
            result = persona_judge_decode(
                model,
                draft_ids,
                model,
                judge_ids,
                max_new_tokens=budget,
                generator=generator,
                **setting,
            )
            stats = result.stats
            emitted += stats.emitted
            accepted += stats.accepted
            tested += stats.accepted + stats.rejected
            passes += stats.draft_forward_passes + stats.judge_forward_passes
        rate = emitted / (time.perf_counter() - start)
        label = " ".join(f"{k}={v}" for k, v in setting.items())
        print(
            f"{label:<62} {rate:7.1f} {rate / baseline_rate:6.2f} "
            f"{accepted / max(tested, 1):7.2f} {passes / emitted:10.2f}"
        )


if __name__ == "__main__":
    main()
