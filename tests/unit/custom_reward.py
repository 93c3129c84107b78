"""Rewards a user could write, for tests/unit/test_rewards.py (imported by name from data.reward._target_)."""


def contains_gold(responses, golds):
    return [1.0 if str(g) in r else 0.0 for r, g in zip(responses, golds)]


def scaled(responses, golds, scale=1.0):
    return [scale * float(str(g) in r) for r, g in zip(responses, golds)]


class LengthPenalty:
    def __init__(self, per_char: float):
        self.per_char = per_char

    def __call__(self, responses, golds):
        return [-self.per_char * len(r) for r in responses]


def wrong_length(responses, golds):
    return [1.0]
