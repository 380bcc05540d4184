"""Persona-judge decoding for LangChain: personalized generation with no training."""

from langchain_persona_judge.chat_models import ChatPersonaJudge
from langchain_persona_judge.decoding import (
    DecodeResult,
    DecodeStats,
    persona_judge_decode,
    stream_persona_judge,
)
from langchain_persona_judge.persona_profile import (
    PersonalizedChat,
    PersonaPreferences,
    PersonaProfile,
)

__all__ = [
    "ChatPersonaJudge",
    "DecodeResult",
    "DecodeStats",
    "PersonaPreferences",
    "PersonaProfile",
    "PersonalizedChat",
    "persona_judge_decode",
    "stream_persona_judge",
]
