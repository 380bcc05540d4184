"""Tiny random models and a byte-level ChatML tokenizer for fast, exact tests.

Nothing here is downloaded: the tokenizer is built from the 256 byte values plus
the ChatML special tokens, and the models are random Llamas of a few thousand
parameters, so every test runs in milliseconds on a CPU.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: ids 0-2 are the specials, then one id per byte."""
    # alphabet() is a set with no stable order: sort it so every call builds one vocabulary.
    byte_vocab = {
        ch: i + len(SPECIAL_TOKENS)
        for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))
    }
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)} | byte_vocab
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_llama(
    vocab_size: int, seed: int, *, hidden_size: int = 32, logit_scale: float = 1.0
) -> LlamaForCausalLM:
    """A random 1-layer Llama; `logit_scale` sharpens its next-token distributions."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
    return model


class BigramLM(torch.nn.Module):
    """A first-order Markov "language model" with a fixed logit table.

    It speaks the slice of the transformers interface the decoder uses (``forward``
    with ``cache``/``use_cache``/``logits_to_keep``, ``config``, ``device``), ignores
    the cache, and makes the exact distribution of any decode computable in closed
    form: the next token depends only on the previous one.
    """

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        vocab_size = logits.shape[0]
        self.table = torch.nn.Parameter(logits.double(), requires_grad=False)
        self.config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=1
        )
        self.calls: list[int] = []  # number of tokens fed, per forward call

    @property
    def device(self) -> torch.device:
        return self.table.device

    def get_output_embeddings(self) -> None:
        return None

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: object = None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
    ) -> SimpleNamespace:
        self.calls.append(input_ids.shape[1])
        logits = self.table[input_ids]
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits)


def random_bigram(vocab_size: int, seed: int, sharpness: float = 2.0) -> BigramLM:
    generator = torch.Generator().manual_seed(seed)
    return BigramLM(sharpness * torch.randn(vocab_size, vocab_size, generator=generator))


# Real pairs that share a tokenizer often pad their LM heads to different sizes
# (Qwen2.5-0.5B: 151936 rows, Qwen2.5-7B: 152064). These pad a tiny model's head so
# that the padded ids look attractive: a decoder that failed to cut them off would
# emit them, or blend distributions over different ids.


def padded_bigram(model: BigramLM, extra_rows: int, logit: float = 6.0) -> BigramLM:
    """``model`` with ``extra_rows`` more ids: the same logits on the real ids, and a
    high ``logit`` on every padded one."""
    vocab = model.table.shape[0]
    table = torch.full((vocab + extra_rows, vocab + extra_rows), logit, dtype=torch.float64)
    table[:vocab, :vocab] = model.table
    return BigramLM(table)


def pad_head(model: LlamaForCausalLM, extra_rows: int) -> LlamaForCausalLM:
    """``model`` with ``extra_rows`` more embedding and LM-head rows; the real ids' logits
    are unchanged and each padded row is a real row doubled, so it often wins the argmax."""
    vocab = model.config.vocab_size
    model.resize_token_embeddings(vocab + extra_rows, mean_resizing=False)
    with torch.no_grad():
        model.lm_head.weight[vocab:] = 2 * model.lm_head.weight[:extra_rows]
    return model
