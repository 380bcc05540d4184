"""Persona-judge decoding for LangChain: personalized generation with no training."""

from langchain_persona_judge.chat_models import ChatPersonaJudge
from langchain_persona_judge.decoding import (
    DecodeResult,
    DecodeStats,
    persona_judge_decode,
    stream_persona_judge,
)

__all__ = [
    "ChatPersonaJudge",
    "DecodeResult",
    "DecodeStats",
    "persona_judge_decode",
    "stream_persona_judge",
]
