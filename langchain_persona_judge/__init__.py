"""Persona-judge decoding for LangChain: personalized generation with no training."""

from langchain_persona_judge.chat_models import ChatPersonaJudge
from langchain_persona_judge.decoding import (
    CausalLM,
    DecodeResult,
    DecodeStats,
    persona_judge_decode,
    stream_persona_judge,
)
from langchain_persona_judge.loading import DEFAULT_MODEL, LoadedModel, load_model
from langchain_persona_judge.persona_profile import (
    PersonalizedChat,
    PersonaPreferences,
    PersonaProfile,
)

__all__ = [
    "DEFAULT_MODEL",
    "CausalLM",
    "ChatPersonaJudge",
    "DecodeResult",
    "DecodeStats",
    "LoadedModel",
    "PersonaPreferences",
    "PersonaProfile",
    "PersonalizedChat",
    "load_model",
    "persona_judge_decode",
    "stream_persona_judge",
]
