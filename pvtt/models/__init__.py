"""Model classes of the PVTT family: latent codecs, condition encoders, the Wan-based DiT, its conditioning."""
