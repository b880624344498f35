"""rlcurate.training: rewards, the VAS sampler, PAD and the TRL trainers."""
