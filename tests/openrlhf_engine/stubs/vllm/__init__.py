"""Test-only stand-in for vLLM (which needs a GPU): just the names OpenRLHF imports at module level.

The tests put tests/openrlhf_engine/stubs on sys.path before importing OpenRLHF's trainer modules; generation itself
is replaced by a fake back end in the rollout tests, so nothing here generates text.
"""

__version__ = "0.16.0"


class SamplingParams:
    def __init__(self, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=None, min_tokens=0,
                 skip_special_tokens=True, logprobs=None, **kwargs):
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.skip_special_tokens = skip_special_tokens
        self.logprobs = logprobs
        for k, v in kwargs.items():
            setattr(self, k, v)

    def __repr__(self):
        return f"SamplingParams({vars(self)})"


class AsyncEngineArgs:  # referenced by OpenRLHF's rollout actor, never built in tests
    def __init__(self, *args, **kwargs):
        raise RuntimeError("vLLM is not available in the CPU test environment")


class AsyncLLMEngine:
    @classmethod
    def from_engine_args(cls, *args, **kwargs):
        raise RuntimeError("vLLM is not available in the CPU test environment")
