"""TRAPO: Trust-Region Adaptive Policy Optimization, as pure PyTorch functions.

The algorithm lives in small modules that engines call:
  losses      TrSFT, SFT, LUFFY shaping, Dr.GRPO policy gradient, entropy
  advantages  group advantages (Dr.GRPO: r - mean, no std)
  prefix      expert-prefix cutting (snap to the next paragraph break)
  guidance    micro-group adaptive guidance schedule
  rewards     reward interface (final-answer correctness)
"""

__version__ = "0.1.0"
