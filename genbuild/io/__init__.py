"""File formats and safe writing shared by every stage."""
