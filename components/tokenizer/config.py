from pydantic import Field

from components.config import Section


class TokenizerConfig(Section):
    vocab_size: int = Field(4096, ge=300, le=1_000_000, description="BPE vocabulary size, 256 byte symbols included")
    min_frequency: int = Field(2, ge=1, description="a merge must occur this often to be learned")
    seq_len: int = Field(128, ge=8, description="tokens per packed training sequence")
    eval_fraction: float = Field(0.05, gt=0, lt=0.5, description="share of documents held out for evaluation")
    eval_max_documents: int = Field(500, ge=1, description="cap on held-out documents (keeps evaluation fast)")
    seed: int = Field(0, description="seeds the held-out split and the order of packed sequences")
