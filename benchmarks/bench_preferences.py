"""Does judge_weight steer between two personas? A preference a program can verify.

    python benchmarks/bench_preferences.py [--max-new-tokens 160] [--seeds 2]

The draft persona asks for one short sentence, the judge persona for a detailed
answer. For each judge weight ``w`` the script prints the mean answer length (tokens
until end-of-sequence) over the same questions and seeds, plus the acceptance rate.
If the blend works, length grows with ``w``: ``w = 0`` is the draft persona alone,
``w = 1`` the judge persona alone.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from langchain_persona_judge.decoding import persona_judge_decode
from langchain_persona_judge.loading import DEFAULT_MODEL, load_model

QUESTIONS = [
    "Why is the sky blue?",
    "How do vaccines work?",
    "What is inflation?",
    "How does a refrigerator keep food cold?",
    "Why do we have seasons?",
    "What is machine learning?",
]
SHORT = "Answer in one short sentence of at most ten words. Never say more."
DETAILED = "Answer in great detail, with several paragraphs, examples and explanations."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default=None)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()

    loaded = load_model(args.model, device=args.device, progress=print)
    tokenizer = loaded.tokenizer

    def prompt(persona: str, question: str) -> list[int]:
        messages = [
            {"role": "system", "content": persona},
            {"role": "user", "content": question},
        ]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    print(f"\nmodel={loaded.name} draft persona: short; judge persona: detailed")
    print(f"{len(QUESTIONS)} questions x {args.seeds} seeds, temperature 0.7, top_p 0.9")
    print(f"{'judge_weight':>12} {'mean tokens':>12} {'stdev':>7} {'hit budget':>10} {'accept':>7}")
    for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
        lengths: list[int] = []
        capped = accepted = tested = 0
        for seed in range(args.seeds):
            generator = torch.Generator().manual_seed(seed)
            for question in QUESTIONS:
                result = persona_judge_decode(
                    loaded.model, prompt(SHORT, question),
                    loaded.model, prompt(DETAILED, question),
                    max_new_tokens=args.max_new_tokens, judge_weight=weight,
                    temperature=0.7, top_p=0.9, generator=generator,
                    eos_token_id=tokenizer.eos_token_id,
                )  # fmt: skip
                lengths.append(len(result.token_ids))
                capped += result.stats.finish_reason == "length"
                accepted += result.stats.accepted
                tested += result.stats.accepted + result.stats.rejected
        print(
            f"{weight:12.2f} {statistics.mean(lengths):12.1f} {statistics.stdev(lengths):7.1f} "
            f"{capped:>10} {accepted / max(tested, 1):7.2f}"
        )


if __name__ == "__main__":
    main()
