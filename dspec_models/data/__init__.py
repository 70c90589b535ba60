"""Real-text data layer: four corpora from packages, seqio Tasks, local SentencePiece
vocabularies, and a small batching API (``load_examples``, ``batches``, ``decode``).

Importing this package does not import TensorFlow; ``batches``/``decode`` and
``dspec_models.data.tasks`` do (seqio).
"""

from dspec_models.data.api import batches, decode, encode, get_vocabulary, load_examples
from dspec_models.data.corpora import TASK_SPECS, TaskSpec, task_spec
from dspec_models.data.paths import CorpusUnavailableError, SETUP_HINT
from dspec_models.data.vocab import DEFAULT_VOCAB_SIZE, EOS_ID, FULL_VOCAB_SIZE, PAD_ID, UNK_ID

TASK_NAMES = tuple(TASK_SPECS)

__all__ = [
    "batches", "decode", "encode", "get_vocabulary", "load_examples",
    "TASK_NAMES", "TASK_SPECS", "TaskSpec", "task_spec",
    "CorpusUnavailableError", "SETUP_HINT",
    "DEFAULT_VOCAB_SIZE", "FULL_VOCAB_SIZE", "EOS_ID", "PAD_ID", "UNK_ID",
]
