"""Weight and checkpoint files: strict loading, digests, safe torch loading, the checkpoint and
published-trunk formats, and one resolver for every location (local or ``hf://``)."""
