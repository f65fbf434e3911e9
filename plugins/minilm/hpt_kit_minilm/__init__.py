"""all-MiniLM-L6-v2 as the hpt-kit text encoder ``all-minilm-l6-v2``: 384-d sentence and token vectors."""

__version__ = "0.1.0"
