"""Image transformations: I-JEPA masking, IWM's photometric actions, crops and augmentation lists."""
