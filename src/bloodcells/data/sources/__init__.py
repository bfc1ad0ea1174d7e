"""Where images come from: the lab's download, BBBC045 montages, the synthetic demo set."""

from bloodcells.data.sources.synthetic import SYNTHETIC_NOTICE, SynthConfig, ensure_demo_set

__all__ = ["SYNTHETIC_NOTICE", "SynthConfig", "ensure_demo_set"]
