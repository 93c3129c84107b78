"""Test-only stand-in for vllm.inputs."""


class TokensPrompt(dict):
    pass
