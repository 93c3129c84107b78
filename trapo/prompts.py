"""Prompt formatting is `evaluation.prompts` (the bottom layer, shared by training and evaluation); these names
stay importable from here."""

from evaluation.prompts import QWEN_MATH_INSTRUCTION, build_prompt

__all__ = ["QWEN_MATH_INSTRUCTION", "build_prompt"]
