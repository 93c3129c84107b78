"""Prompt formatting: one function, used by training (trapo/) and evaluation alike; it lives here, at the bottom."""

from __future__ import annotations

QWEN_MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def build_prompt(question: str, tokenizer=None, template: str | None = None) -> str:
    """Format a question for a model.

    `template` (a format string with ``{question}``) wins when given: the embedded tiny model uses a
    plain one. Otherwise a tokenizer with a chat template gets a user turn with the Qwen2.5-Math
    instruction; a tokenizer without one gets the question and the instruction as plain text.
    """
    if template is not None:
        return template.format(question=question)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": f"{question}\n{QWEN_MATH_INSTRUCTION}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{question}\n{QWEN_MATH_INSTRUCTION}\n"
