"""The JEPA world model's components: conditioning schemes, the ViT predictor and the EMA target."""
